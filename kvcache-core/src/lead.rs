//! What a leader does with the keys it leads, step by step: look again, generate, store the
//! generated values in one batch, land every flight. The steps are written once; the synchronous
//! and the async path each drive them with their own calls.

use std::sync::Arc;

use crate::codec::Value;

use crate::error::{Error, Result};
use crate::flight::Leader;
use crate::slot::{Keep, Typed};

/// The keys one caller leads, and what it has got for each so far.
pub(crate) struct Batch<V> {
    typed: Typed<V>,
    leaders: Vec<Leader>,
    got: Vec<Option<Got<V>>>,
    keep: Keep,
}

enum Got<V> {
    /// Stored by another caller's flight since this caller's look-up.
    Found(Arc<[u8]>),
    /// Generated and encoded here, to be stored; the value itself is kept too when the store
    /// holds values (in memory).
    Generated(Vec<u8>, Option<V>),
    Failed(Error),
}

impl<V: Value> Batch<V> {
    pub(crate) fn new(typed: Typed<V>, leaders: Vec<Leader>, keep: Keep) -> Self {
        let got = leaders.iter().map(|_| None).collect();
        Batch {
            typed,
            leaders,
            got,
            keep,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.leaders.is_empty()
    }

    /// The keys it has nothing for yet.
    pub(crate) fn pending(&self) -> Vec<String> {
        self.leaders
            .iter()
            .zip(&self.got)
            .filter(|(_, got)| got.is_none())
            .map(|(leader, _)| leader.key().to_owned())
            .collect()
    }

    /// Whether a flight landed since the caller's look-up, so the keys must be looked up again
    /// before they are generated.
    pub(crate) fn must_look_again(&self) -> bool {
        self.typed.look_again(self.keep)
    }

    /// Takes what looking the pending keys up again found.
    pub(crate) fn looked_again(&mut self, found: Result<Vec<Option<Vec<u8>>>>) {
        let found = self.typed.backend_call(found).and_then(|found| {
            self.typed
                .check_batch(&found, self.pending().len())
                .map(|()| found)
        });
        match found {
            Ok(found) => {
                let mut found = found.into_iter();
                for got in self.got.iter_mut().filter(|got| got.is_none()) {
                    if let Some(bytes) = found.next().flatten()
                        && self.typed.codec.decode(&bytes).is_some()
                    {
                        *got = Some(Got::Found(Arc::from(bytes)));
                    }
                }
            }
            Err(error) => match self.typed.fail_open(error) {
                Ok(()) => self.keep = Keep::No,
                Err(error) => self.fail_pending(&error),
            },
        }
    }

    /// Takes the generator's results for the pending keys, in order.
    pub(crate) fn generated(&mut self, results: Vec<Result<V>>) {
        let mut results = results.into_iter();
        for (leader, got) in self.leaders.iter().zip(self.got.iter_mut()) {
            if got.is_some() {
                continue;
            }
            let Some(result) = results.next() else { break };
            let holds = self.typed.slot.memory.is_some();
            *got = Some(
                match result.and_then(|value| {
                    let bytes = self.typed.generated(leader.key(), &value)?;
                    Ok(Got::Generated(bytes, holds.then_some(value)))
                }) {
                    Ok(generated) => generated,
                    Err(error) => Got::Failed(error),
                },
            );
        }
    }

    /// With an in-memory store, holds the generated values there, as values, and returns
    /// `true`; otherwise returns `false`, and the caller stores [`to_store`](Batch::to_store).
    pub(crate) fn hold(&mut self) -> bool {
        let Some(memory) = self.typed.slot.memory.clone() else {
            return false;
        };
        if self.keep == Keep::No {
            return true;
        }
        for (leader, got) in self.leaders.iter().zip(&mut self.got) {
            if let Some(Got::Generated(bytes, value)) = got
                && let Some(value) = value.take()
                && let Err(error) = self
                    .typed
                    .hold(&memory, leader.key(), value, Some(bytes.len()))
            {
                *got = Some(Got::Failed(error));
            }
        }
        true
    }

    /// The generated entries to store, if they are to be stored.
    pub(crate) fn to_store(&self) -> Option<Vec<(&str, &[u8])>> {
        if self.keep == Keep::No {
            return None;
        }
        let entries: Vec<(&str, &[u8])> = self
            .leaders
            .iter()
            .zip(&self.got)
            .filter_map(|(leader, got)| match got {
                Some(Got::Generated(bytes, _)) => Some((leader.key(), bytes.as_slice())),
                _ => None,
            })
            .collect();
        tracing::trace!(container = %self.typed.slot.name, entries = entries.len(), "store");
        (!entries.is_empty()).then_some(entries)
    }

    /// Takes the outcome of storing them: under `fail`, a failed store fails their keys.
    pub(crate) fn stored(&mut self, result: Result<()>) {
        if let Err(error) = self.typed.backend_call(result)
            && let Err(error) = self.typed.fail_open(error)
        {
            for got in &mut self.got {
                if matches!(got, Some(Got::Generated(..))) {
                    *got = Some(Got::Failed(error.clone()));
                }
            }
        }
    }

    /// Lands every flight with what it got.
    pub(crate) fn land(self) {
        for (leader, got) in self.leaders.into_iter().zip(self.got) {
            let outcome = match got {
                Some(Got::Found(bytes)) => Ok(bytes),
                Some(Got::Generated(bytes, _)) => Ok(Arc::from(bytes)),
                Some(Got::Failed(error)) => Err(error),
                None => Err(self.typed.generator_failed(
                    leader.key(),
                    "the generator returned fewer values than it was asked for".into(),
                )),
            };
            leader.land(outcome);
        }
    }

    fn fail_pending(&mut self, error: &Error) {
        for got in self.got.iter_mut().filter(|got| got.is_none()) {
            *got = Some(Got::Failed(error.clone()));
        }
    }
}
