//! What the benches share: the values they store, the keys they use, the hand-written encoding
//! their raw peers store (bincode's layout without kvcache's header, so that both sides store and
//! send the same number of bytes), and the harnesses that time kvcache and a peer the same way
//! (awaited calls, concurrent tasks, concurrent threads). See `benches/` and BENCHMARKS.md.

use std::future::Future;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

/// Keys each bench cycles through.
pub const KEYS: usize = 1_000;
/// Keys in one batch.
pub const BATCH: usize = 16;

/// A 1 KiB value with some structure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kib {
    /// An id.
    pub id: u64,
    /// A name.
    pub name: String,
    /// 249 numbers.
    pub samples: Vec<u32>,
}

/// The struct value of `id`.
pub fn kib(id: u64) -> Kib {
    Kib {
        id,
        name: format!("record {id:>20}"),
        samples: (0..249).collect(),
    }
}

/// The 32-byte string value of `key`.
pub fn string32(key: &str) -> String {
    format!("{key:-<32}")[..32].to_owned()
}

/// `key-0` to `key-999`.
pub fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("key-{i}")).collect()
}

/// Consecutive runs of [`BATCH`] keys.
pub fn batches(keys: &[String]) -> Vec<Vec<&str>> {
    keys.chunks_exact(BATCH)
        .map(|chunk| chunk.iter().map(String::as_str).collect())
        .collect()
}

/// The numbers of the calls one worker (a task or a thread) of [`concurrent`] or [`threads`]
/// makes: worker `w` of `n` makes calls `w`, `w + n`, `w + 2n`... below the total, so that the
/// workers between them make each call once and take their keys (`keys[call % KEYS]`) spread over
/// the whole set.
#[derive(Debug, Clone)]
pub struct Calls {
    next: u64,
    step: u64,
    end: u64,
}

impl Iterator for Calls {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        (self.next < self.end).then(|| {
            let call = self.next;
            self.next += self.step;
            call as usize
        })
    }
}

/// The calls of worker `worker` of `workers`, which make `total` calls between them.
fn calls(worker: usize, workers: usize, total: u64) -> Calls {
    Calls {
        next: worker as u64,
        step: workers as u64,
        end: total,
    }
}

/// The time `op` takes to run `iters` times, one call after another, awaited in one task on
/// `runtime`: one `block_on` per batch of criterion's, so that kvcache and its async peer pay the
/// same harness cost, and as little as a loop.
pub fn awaited<T>(runtime: &Runtime, iters: u64, mut op: impl AsyncFnMut() -> T) -> Duration {
    runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(op().await);
        }
        start.elapsed()
    })
}

/// The time `tasks` tasks spawned on `runtime` take to make `total` calls between them: each runs
/// the future `work` makes of its [`Calls`]. Timed from the moment every task has started (they
/// wait for one another first, so spawning is not timed) to the end of the last.
pub fn concurrent<F, Fut>(runtime: &Runtime, tasks: usize, total: u64, work: F) -> Duration
where
    F: Fn(Calls) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let started = Arc::new(tokio::sync::Barrier::new(tasks + 1));
    runtime.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|task| {
                let (started, work) = (Arc::clone(&started), work(calls(task, tasks, total)));
                tokio::spawn(async move {
                    started.wait().await;
                    work.await;
                })
            })
            .collect();
        started.wait().await;
        let start = Instant::now();
        for handle in handles {
            handle.await.expect("a task of the bench panicked");
        }
        start.elapsed()
    })
}

/// The time `count` threads take to make `total` calls between them: each runs `work` on its
/// [`Calls`]. Timed from the moment every thread has started to the end of the last.
pub fn threads(count: usize, total: u64, work: impl Fn(Calls) + Sync) -> Duration {
    let started = Barrier::new(count + 1);
    thread::scope(|s| {
        let handles: Vec<_> = (0..count)
            .map(|worker| {
                let (started, work) = (&started, &work);
                s.spawn(move || {
                    started.wait();
                    work(calls(worker, count, total));
                })
            })
            .collect();
        started.wait();
        let start = Instant::now();
        for handle in handles {
            handle.join().expect("a thread of the bench panicked");
        }
        start.elapsed()
    })
}

/// kvcache and its peer timed in turns, round after round, so that a machine whose speed drifts
/// (a loopback whose round trip jumps between 20 and 120 µs) slows both alike: the median of the
/// rounds' ratios is steadier than two estimates made seconds apart.
#[derive(Debug, Default)]
pub struct Turns {
    /// Each full round's kvcache time ÷ peer time.
    ratios: Vec<f64>,
    kvcache: Duration,
    peer: Duration,
    calls: u64,
    /// Every round so far, full or not: who goes first alternates with it.
    rounds: u64,
}

impl Turns {
    /// Makes `iters` calls on each side, in rounds of at most `round` calls, kvcache first in
    /// one round and the peer first in the next; returns kvcache's time, for criterion. Only
    /// full rounds count in [`summary`](Turns::summary).
    pub fn take(
        &mut self,
        iters: u64,
        round: u64,
        mut kvcache: impl FnMut(u64) -> Duration,
        mut peer: impl FnMut(u64) -> Duration,
    ) -> Duration {
        let (mut total, mut left) = (Duration::ZERO, iters);
        while left > 0 {
            let n = left.min(round);
            self.rounds += 1;
            let (k, p) = if self.rounds.is_multiple_of(2) {
                let k = kvcache(n);
                (k, peer(n))
            } else {
                let p = peer(n);
                (kvcache(n), p)
            };
            if n == round {
                self.ratios.push(k.as_secs_f64() / p.as_secs_f64());
                (self.kvcache, self.peer, self.calls) =
                    (self.kvcache + k, self.peer + p, self.calls + n);
            }
            total += k;
            left -= n;
        }
        total
    }

    /// The median of the full rounds' ratios (kvcache ÷ peer, in time: below 1 is faster), their
    /// quartiles, and the time a call over all of them.
    pub fn summary(&self) -> String {
        if self.ratios.is_empty() {
            return "no full round".to_owned();
        }
        let mut ratios = self.ratios.clone();
        ratios.sort_by(f64::total_cmp);
        let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
        let per_call = |total: Duration| total / u32::try_from(self.calls).unwrap_or(u32::MAX);
        format!(
            "median ratio {:.3} (quartiles {:.3}-{:.3}) over {} rounds; kvcache {:.2?}, peer {:.2?} a call",
            at(0.5),
            at(0.25),
            at(0.75),
            ratios.len(),
            per_call(self.kvcache),
            per_call(self.peer),
        )
    }
}

/// A value the raw peers encode by hand.
pub trait Hand: Sized {
    /// The value's bytes.
    fn encode(&self) -> Vec<u8>;
    /// The value in `bytes`, if they hold exactly one.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

impl Hand for String {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    }
}

/// Each integer a varint, a byte below 251 standing for itself, as bincode lays it out.
impl Hand for Kib {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.name.len() + self.samples.len());
        put(&mut out, self.id);
        put(&mut out, self.name.len() as u64);
        out.extend_from_slice(self.name.as_bytes());
        put(&mut out, self.samples.len() as u64);
        for &sample in &self.samples {
            put(&mut out, u64::from(sample));
        }
        out
    }

    fn decode(mut bytes: &[u8]) -> Option<Self> {
        let id = take(&mut bytes)?;
        let len = usize::try_from(take(&mut bytes)?).ok()?;
        let (name, mut rest) = bytes.split_at_checked(len)?;
        let count = usize::try_from(take(&mut rest)?).ok()?;
        let mut samples = Vec::with_capacity(count.min(rest.len()));
        for _ in 0..count {
            samples.push(u32::try_from(take(&mut rest)?).ok()?);
        }
        rest.is_empty().then_some(())?;
        Some(Kib {
            id,
            name: std::str::from_utf8(name).ok()?.to_owned(),
            samples,
        })
    }
}

/// Appends `n` as a varint: one byte below 251, else a marker byte and 2, 4 or 8 bytes.
fn put(out: &mut Vec<u8>, n: u64) {
    if n < 251 {
        out.push(n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(251);
        out.extend_from_slice(&n.to_le_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(252);
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&n.to_le_bytes());
    }
}

/// Reads a varint [`put`] wrote off the front of `bytes`.
fn take(bytes: &mut &[u8]) -> Option<u64> {
    let (&first, rest) = bytes.split_first()?;
    let (n, rest) = match first {
        0..251 => (u64::from(first), rest),
        251 => rest
            .split_first_chunk()
            .map(|(n, rest)| (u64::from(u16::from_le_bytes(*n)), rest))?,
        252 => rest
            .split_first_chunk()
            .map(|(n, rest)| (u64::from(u32::from_le_bytes(*n)), rest))?,
        253 => rest
            .split_first_chunk()
            .map(|(n, rest)| (u64::from_le_bytes(*n), rest))?,
        _ => return None,
    };
    *bytes = rest;
    Some(n)
}

/// `var`'s URL, or `default`, when something answers at its host and port within `timeout`;
/// else `None`, after a `SKIPPED` notice.
pub fn service_url(var: &str, default: &str, timeout: Duration) -> Option<String> {
    use std::net::{TcpStream, ToSocketAddrs};
    let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let authority = url
        .split_once("://")
        .map_or("", |(_, rest)| rest.split(['/', '?']).next().unwrap_or(""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let reachable = host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|address| TcpStream::connect_timeout(&address, timeout).is_ok());
    if !reachable {
        println!("SKIPPED: nothing answers at {host_port:?}; set {var} or start the server");
    }
    reachable.then_some(url)
}

#[cfg(test)]
mod tests {
    use super::{Hand, calls, kib};

    #[test]
    fn the_workers_make_each_call_once() {
        let mut made: Vec<usize> = (0..3).flat_map(|worker| calls(worker, 3, 10)).collect();
        made.sort_unstable();
        assert_eq!(made, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn the_hand_encoding_is_bincodes_layout() {
        let value = kib(300);
        let config = bincode::config::standard();
        assert_eq!(
            value.encode(),
            bincode::serde::encode_to_vec(&value, config).unwrap()
        );
        assert_eq!(super::Kib::decode(&value.encode()), Some(value));
    }
}
