//! How a value becomes the bytes a backend stores: a small header, then bincode.
//!
//! The header is one format-version byte and an 8-byte fingerprint of the value's type. Bytes
//! with another version or fingerprint, bytes that do not decode, and bytes with anything left
//! over after the value all read as a miss, so a value written by another type or an older format
//! is regenerated, never returned as garbage.
//!
//! The fingerprint is a hash of the type's shape in serde's data model, as `serde-reflection`
//! traces it from the type's `Deserialize`: its structs and enums by name, with their fields and
//! variants in order, down to the primitives. It is the same in every build, on every platform
//! and with every compiler that builds the same definition, and it changes when a field or a
//! variant is added, removed, renamed, reordered or retyped. A type that cannot be traced (a
//! hand-written `Deserialize` that rejects the tracer's sample values) falls back to a hash of its
//! `std::any::type_name`, which is stable within one toolchain only.

use std::any::TypeId;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Mutex, OnceLock, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::compress::{self, COMPRESSED};
use crate::error::BoxError;
use crate::options::Compression;

/// The current layout of stored values: 2 since the fingerprint is the type's traced shape.
pub(crate) const FORMAT: u8 = 2;
pub(crate) const HEADER_LEN: usize = 9;

/// What a container's values are: serde for the backends that store bytes, `Clone` for the
/// in-memory ones that hand out a copy of what they hold, and shareable across threads.
///
/// It is implemented for every type that is all of these.
pub trait Value: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Value for V {}

/// The codec of the value type `V`.
#[derive(Debug)]
pub(crate) struct Codec<V> {
    header: [u8; HEADER_LEN],
    /// How values longer than the length are compressed, if they are.
    compress: Option<(Compression, usize)>,
    value: PhantomData<fn() -> V>,
}

impl<V> Clone for Codec<V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for Codec<V> {}

impl<V: Serialize + DeserializeOwned + 'static> Codec<V> {
    pub(crate) fn new() -> Self {
        let mut header = [0; HEADER_LEN];
        header[0] = FORMAT;
        header[1..].copy_from_slice(&fingerprint::<V>().to_le_bytes());
        Codec {
            header,
            compress: None,
            value: PhantomData,
        }
    }

    /// The same codec, compressing as `compress` says.
    pub(crate) fn compressing(mut self, compress: Option<(Compression, usize)>) -> Self {
        self.compress = compress;
        self
    }

    pub(crate) fn type_name() -> &'static str {
        std::any::type_name::<V>()
    }

    pub(crate) fn encode(&self, value: &V) -> Result<Vec<u8>, BoxError> {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&self.header);
        bincode::serde::encode_into_std_write(value, &mut bytes, config())?;
        match self.compress {
            Some((compression, above)) if bytes.len() > above => {
                let mut compressed = Vec::with_capacity(bytes.len() / 2 + HEADER_LEN + 1);
                compressed.push(COMPRESSED);
                compressed.extend_from_slice(&self.header[1..]);
                compress::compress(compression, &bytes[HEADER_LEN..], &mut compressed)?;
                // Kept only when it saves something: incompressible bodies stay plain.
                Ok(if compressed.len() < bytes.len() {
                    compressed
                } else {
                    bytes
                })
            }
            _ => Ok(bytes),
        }
    }

    /// How many bytes [`encode`](Codec::encode) makes of `value`, without making them.
    pub(crate) fn encoded_len(&self, value: &V) -> Result<usize, BoxError> {
        let mut size = bincode::enc::write::SizeWriter::default();
        bincode::serde::encode_into_writer(value, &mut size, config())?;
        Ok(HEADER_LEN + size.bytes_written)
    }

    /// The value in `bytes`, or `None` when they were not written by this type's codec, with
    /// or without compression.
    pub(crate) fn decode(&self, bytes: &[u8]) -> Option<V> {
        if let Some(body) = bytes.strip_prefix(&self.header) {
            return decode_body(body);
        }
        let (&format, rest) = bytes.split_first()?;
        let compressed = rest
            .strip_prefix(&self.header[1..])
            .filter(|_| format == COMPRESSED)?;
        decode_body(&compress::decompress(compressed)?)
    }
}

fn decode_body<V: DeserializeOwned>(body: &[u8]) -> Option<V> {
    match bincode::serde::decode_from_slice(body, config()) {
        Ok((value, read)) if read == body.len() => Some(value),
        _ => None,
    }
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The fingerprint of `V`, traced once per type and process.
pub(crate) fn fingerprint<V: DeserializeOwned + 'static>() -> u64 {
    static TRACED: OnceLock<Mutex<HashMap<TypeId, u64>>> = OnceLock::new();
    let traced = TRACED.get_or_init(Mutex::default);
    let known = traced
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&TypeId::of::<V>())
        .copied();
    known.unwrap_or_else(|| {
        let fingerprint = match shape::<V>() {
            Some(shape) => fnv1a(&shape),
            None => {
                tracing::debug!(
                    value_type = std::any::type_name::<V>(),
                    "the value type's shape cannot be traced: its fingerprint is its type name"
                );
                fnv1a(std::any::type_name::<V>().as_bytes())
            }
        };
        traced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(TypeId::of::<V>(), fingerprint);
        fingerprint
    })
}

/// `V`'s shape in serde's data model, encoded: its format and those of the named types in it.
fn shape<V: DeserializeOwned>() -> Option<Vec<u8>> {
    use serde_reflection::{FormatHolder, Tracer, TracerConfig};
    let mut tracer = Tracer::new(TracerConfig::default());
    let (mut format, _samples) = tracer.trace_simple_type::<V>().ok()?;
    format.normalize().ok()?;
    let named = tracer.registry_unchecked();
    bincode::serde::encode_to_vec((&format, &named), config()).ok()
}

/// FNV-1a: stable across builds and platforms, unlike `std`'s hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
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

    #[cfg(any(feature = "zstd", feature = "lz4"))]
    #[test]
    fn compressed_values_round_trip_and_are_read_by_any_codec_of_the_type() {
        use crate::options::Compression;
        let text = "a value that repeats itself, ".repeat(40);
        let compressions = [
            #[cfg(feature = "zstd")]
            Compression::Zstd,
            #[cfg(feature = "lz4")]
            Compression::Lz4,
        ];
        for compression in compressions {
            let codec = Codec::<String>::new().compressing(Some((compression, 256)));
            let bytes = codec.encode(&text).unwrap();
            assert_eq!(bytes[0], super::COMPRESSED, "{compression:?}");
            assert!(
                bytes.len() < text.len() / 4,
                "{compression:?}: {} bytes",
                bytes.len()
            );
            assert_eq!(codec.decode(&bytes).as_ref(), Some(&text));
            assert_eq!(Codec::<String>::new().decode(&bytes).as_ref(), Some(&text));
            assert_eq!(Codec::<Point>::new().decode(&bytes), None, "another type");
            let short = codec.encode(&"short".to_owned()).unwrap();
            assert_eq!(short[0], super::FORMAT, "below the threshold: plain");
            // Corrupt frames and lying lengths are misses, not panics or huge allocations.
            for cut in [10, 11, 14, bytes.len() - 1] {
                assert_eq!(
                    codec.decode(&bytes[..cut]),
                    None,
                    "{compression:?} cut at {cut}"
                );
            }
            let mut lying = bytes.clone();
            lying[11..15].copy_from_slice(&[0xff; 4]);
            assert_eq!(codec.decode(&lying), None, "{compression:?}");
            let mut unknown = bytes.clone();
            unknown[9] = 99;
            assert_eq!(codec.decode(&unknown), None);
        }
    }

    #[test]
    fn bytes_of_another_type_or_format_are_a_miss() {
        let bytes = Codec::<String>::new().encode(&"hello".to_owned()).unwrap();
        assert_eq!(Codec::<Point>::new().decode(&bytes), None);
        let mut older = bytes.clone();
        older[0] = 0;
        assert_eq!(Codec::<String>::new().decode(&older), None);
    }

    mod v1 {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub(super) struct Point {
            pub(super) x: i32,
            pub(super) y: i32,
        }
    }

    mod v2 {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub(super) struct Point {
            pub(super) x: i64,
            pub(super) y: i32,
        }
    }

    mod e1 {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub(super) enum Shape {
            Circle { r: u32 },
            Square(u32),
        }
    }

    mod e2 {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub(super) enum Shape {
            Circle { r: u32 },
            Square(u32),
            Dot,
        }
    }

    /// Fingerprints are pinned: they are stored in persistent caches and shared by every build
    /// of a service, so a change here empties every cache, and must come with a FORMAT bump.
    #[test]
    fn fingerprints_are_the_traced_shape_and_do_not_change_between_builds() {
        use super::fingerprint;
        assert_eq!(fingerprint::<String>(), 0x0865_8207_b516_bf54);
        assert_eq!(
            fingerprint::<u64>(),
            fingerprint::<usize>(),
            "serde encodes usize as u64"
        );
        assert_ne!(fingerprint::<u64>(), fingerprint::<u32>());
        // Same name and field names, another field type: another fingerprint.
        assert_ne!(fingerprint::<v1::Point>(), fingerprint::<v2::Point>());
        // The module path is not part of it (it moves with refactors), the shape is.
        assert_eq!(fingerprint::<v1::Point>(), fingerprint::<Point>());
        assert_ne!(
            fingerprint::<e1::Shape>(),
            fingerprint::<e2::Shape>(),
            "a variant added"
        );
        assert_ne!(
            fingerprint::<Vec<String>>(),
            fingerprint::<Option<String>>()
        );
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
