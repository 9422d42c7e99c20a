//! How a value becomes the bytes a backend stores: a small header, then bincode.
//!
//! The header is one format-version byte and an 8-byte fingerprint of the value's type. Bytes
//! with another version or fingerprint, bytes that do not decode, and bytes with anything left
//! over after the value all read as a miss, so a value written by another type or an older format
//! is regenerated, never returned as garbage.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::BoxError;

/// The current layout of stored values.
const FORMAT: u8 = 1;
const HEADER_LEN: usize = 9;

/// The codec of the value type `V`.
#[derive(Debug)]
pub(crate) struct Codec<V> {
    header: [u8; HEADER_LEN],
    value: PhantomData<fn() -> V>,
}

impl<V> Clone for Codec<V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for Codec<V> {}

impl<V: Serialize + DeserializeOwned> Codec<V> {
    pub(crate) fn new() -> Self {
        let mut header = [0; HEADER_LEN];
        header[0] = FORMAT;
        header[1..].copy_from_slice(&fingerprint(Self::type_name()).to_le_bytes());
        Codec {
            header,
            value: PhantomData,
        }
    }

    pub(crate) fn type_name() -> &'static str {
        std::any::type_name::<V>()
    }

    pub(crate) fn encode(&self, value: &V) -> Result<Vec<u8>, BoxError> {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&self.header);
        bincode::serde::encode_into_std_write(value, &mut bytes, config())?;
        Ok(bytes)
    }

    /// The value in `bytes`, or `None` when they were not written by this codec.
    pub(crate) fn decode(&self, bytes: &[u8]) -> Option<V> {
        let body = bytes.strip_prefix(&self.header)?;
        match bincode::serde::decode_from_slice(body, config()) {
            Ok((value, read)) if read == body.len() => Some(value),
            _ => None,
        }
    }
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// FNV-1a: stable across builds and platforms, unlike `std`'s hasher.
fn fingerprint(type_name: &str) -> u64 {
    type_name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::Codec;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[test]
    fn a_value_round_trips() {
        let codec = Codec::<Point>::new();
        let bytes = codec.encode(&Point { x: 1, y: -2 }).unwrap();
        assert_eq!(codec.decode(&bytes), Some(Point { x: 1, y: -2 }));
    }

    #[test]
    fn bytes_of_another_type_or_format_are_a_miss() {
        let bytes = Codec::<String>::new().encode(&"hello".to_owned()).unwrap();
        assert_eq!(Codec::<Point>::new().decode(&bytes), None);
        let mut older = bytes.clone();
        older[0] = 0;
        assert_eq!(Codec::<String>::new().decode(&older), None);
    }

    #[test]
    fn truncated_padded_and_random_bytes_are_a_miss() {
        let codec = Codec::<Point>::new();
        let bytes = codec.encode(&Point { x: 300, y: 4 }).unwrap();
        for len in 0..bytes.len() {
            assert_eq!(codec.decode(&bytes[..len]), None, "truncated to {len}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert_eq!(codec.decode(&padded), None);
        assert_eq!(Codec::<String>::new().decode(&[0xff; 40]), None);
    }
}
