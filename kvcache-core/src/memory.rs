//! The contract of an in-process store that keeps values decoded, and the byte store derived
//! from it.

use std::any::Any;
use std::fmt::{self, Debug};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::Store;
use crate::codec::{Codec, Value};
use crate::error::{BoxError, Result};
use crate::stamp::Stamp;

/// One container's entries in an in-process store, kept as values, not bytes: a hit hands out
/// a clone of the value, never decodes it.
///
/// Calls never block on I/O and never fail. A miss is `false` or nothing, never an error; an
/// expired entry is a miss. The core derives a byte [`Store`] from it for the callers that move
/// bytes (the conformance suite, the `kvcache` command): bytes stored there are held as bytes
/// and decoded when read as a value.
pub trait MemoryStore: Send + Sync + Debug {
    /// Stores `value` under `key`, replacing what was there, with the weight the bound in bytes
    /// counts it for. With `ttl`, the entry expires that long after now.
    fn insert(&self, key: &str, value: Held, weight: u64, ttl: Option<Duration>);

    /// Calls `read` with the value under `key` and returns `true`, or returns `false` on a miss.
    fn get_with(&self, key: &str, read: &mut dyn FnMut(&Held)) -> bool;

    /// Deletes the entry under `key`, if there is one.
    fn remove(&self, key: &str);

    /// Deletes every entry of this container, and no other container's.
    fn clear(&self);

    /// How many of this container's entries the store has dropped by itself, by cause.
    fn evictions(&self) -> Evictions {
        Evictions::default()
    }
}

/// Entries an in-memory store dropped by itself, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Evictions {
    /// Dropped to keep the store within its bound (entries or bytes).
    pub size: u64,
    /// Dropped because they had expired.
    pub expired: u64,
}

impl Evictions {
    /// Counts of `size` and `expired` evictions.
    pub fn new(size: u64, expired: u64) -> Self {
        Evictions { size, expired }
    }
}

/// A value as an in-memory store holds it: a container's own value, or bytes.
///
/// Only the core makes them; a store keeps them and hands them back.
pub struct Held(Box<dyn Holdable>);

/// What a held value can be asked: what it is, and how it would be stored as bytes.
trait Holdable: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn encoded(&self) -> Result<Vec<u8>, BoxError>;
}

/// A container's value, with its type.
struct Typed<V>(V);

impl<V: Value> Holdable for Typed<V> {
    fn as_any(&self) -> &dyn Any {
        &self.0
    }

    fn encoded(&self) -> Result<Vec<u8>, BoxError> {
        Codec::<V>::new().encode(&self.0)
    }
}

/// Bytes stored through the byte view.
struct Bytes(Box<[u8]>);

impl Holdable for Bytes {
    fn as_any(&self) -> &dyn Any {
        &self.0
    }

    fn encoded(&self) -> Result<Vec<u8>, BoxError> {
        Ok(self.0.to_vec())
    }
}

/// The weight of an entry in an in-memory store's byte bound: its key and its encoded value.
pub(crate) fn weight(key: &str, encoded_len: usize) -> u64 {
    u64::try_from(key.len() + encoded_len).unwrap_or(u64::MAX)
}

/// A container's value with its stamp, for the containers that serve stale values.
pub(crate) struct Stamped<V> {
    pub(crate) stamp: Stamp,
    pub(crate) value: V,
}

impl<V: Value> Holdable for Stamped<V> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn encoded(&self) -> Result<Vec<u8>, BoxError> {
        let mut bytes = Vec::new();
        self.stamp.write(&mut bytes);
        bytes.extend_from_slice(&Codec::<V>::new().encode(&self.value)?);
        Ok(bytes)
    }
}

impl Held {
    /// A container's value.
    pub(crate) fn value<V: Value>(value: V) -> Self {
        Held(Box::new(Typed(value)))
    }

    /// A container's value, with its stamp.
    pub(crate) fn stamped<V: Value>(stamp: Stamp, value: V) -> Self {
        Held(Box::new(Stamped { stamp, value }))
    }

    /// The stamped value, if it is a stamped `V`.
    pub(crate) fn get_stamped<V: Value>(&self) -> Option<&Stamped<V>> {
        self.0.as_any().downcast_ref()
    }

    /// Bytes, as a byte store holds them.
    pub fn bytes(bytes: &[u8]) -> Self {
        Held(Box::new(Bytes(bytes.into())))
    }

    /// The value, if it is a `V`.
    pub(crate) fn get<V: Value>(&self) -> Option<&V> {
        self.0.as_any().downcast_ref()
    }

    /// The bytes, if it was stored as bytes.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        self.0.as_any().downcast_ref::<Box<[u8]>>().map(|b| &**b)
    }

    /// The bytes a byte store would hold for it: the codec's header and the encoded value.
    ///
    /// # Errors
    ///
    /// The serializer's, when the value cannot be encoded.
    pub fn encoded(&self) -> Result<Vec<u8>, BoxError> {
        self.0.encoded()
    }
}

impl Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_bytes() {
            Some(bytes) => write!(f, "Held({} bytes)", bytes.len()),
            None => f.write_str("Held(value)"),
        }
    }
}

/// An in-memory store's byte view: what it holds, encoded on the way out.
#[derive(Debug)]
pub(crate) struct ByteView(pub(crate) Arc<dyn MemoryStore>);

impl Store for ByteView {
    fn store(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.0
            .insert(key, Held::bytes(value), weight(key, value.len()), ttl);
        Ok(())
    }

    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut found = None;
        self.0
            .get_with(key, &mut |held| found = held.encoded().ok());
        Ok(found)
    }

    fn retrieve_with(&self, key: &str, read: &mut dyn FnMut(&[u8])) -> Result<bool> {
        let mut found = false;
        self.0.get_with(key, &mut |held| match held.as_bytes() {
            Some(bytes) => {
                found = true;
                read(bytes);
            }
            None => {
                if let Ok(bytes) = held.encoded() {
                    found = true;
                    read(&bytes);
                }
            }
        });
        Ok(found)
    }

    fn invalidate(&self, key: &str) -> Result<()> {
        self.0.remove(key);
        Ok(())
    }

    fn clear(&self) -> Result<()> {
        self.0.clear();
        Ok(())
    }
}
