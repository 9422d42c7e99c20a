//! What an operator asks of a cache's backends, from outside the application: which entries a
//! container holds, how many and how large, when they expire, and what one entry is.
//!
//! It is an optional capability of a backend, apart from the per-call [`Store`](crate::Store)
//! and [`AsyncStore`](crate::AsyncStore) traits: a backend that offers it returns itself from
//! [`Backend::inspect`]; the others keep the default, `None`, and every adapter and wrapper of
//! the core goes on without forwarding anything. Its calls are synchronous, name the container
//! on every call and may walk a whole container: they serve the `kvcache` command, not a
//! request path.
//!
//! ```
//! use kvcache_core::inspect::describe;
//!
//! // The bytes a container of `String`s stores for "Hello Peter!".
//! let mut bytes = vec![2]; // format 2
//! bytes.extend_from_slice(&0x0865_8207_b516_bf54_u64.to_le_bytes()); // String's fingerprint
//! bytes.push(12); // bincode: the string's length, then its bytes
//! bytes.extend_from_slice(b"Hello Peter!");
//! let described = describe(&bytes);
//! let header = described.header.unwrap();
//! assert_eq!((header.format, header.fingerprint), (2, 0x0865_8207_b516_bf54));
//! let value = described.value.unwrap();
//! assert_eq!(value.type_name, Some("String"));
//! assert_eq!(value.text, "\"Hello Peter!\"");
//! ```

use std::fmt::Debug;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::backend::Backend;
use crate::codec::{Codec, FORMAT, HEADER_LEN, Value, fingerprint};
use crate::compress;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::stamp::Stamp;

/// A backend's answers to an operator: its containers, their sizes, their keys and entries.
///
/// Every method names the container it is about, as configurations name it. Expired entries
/// that the backend still holds (until a read or a purge deletes them) are not entries: they
/// are counted apart in [`Summary::expired`], and neither listed nor returned.
///
/// `progress` is called now and then, during a walk that may take long, with how many items it
/// has gone through so far (rows, or Redis keys scanned): for a progress display only.
pub trait Inspect: Send + Sync {
    /// The containers that hold entries, sorted, where the backend can list them; `None` where it
    /// cannot tell.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] or [`Error::Unavailable`] when the store fails.
    fn containers(&self, progress: &mut dyn FnMut(u64)) -> Result<Option<Vec<String>>> {
        let _ = progress;
        Ok(None)
    }

    /// How many entries `container` holds, and what the backend can tell of their size and
    /// expiry.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] or [`Error::Unavailable`] when the store fails.
    fn summary(&self, container: &str, progress: &mut dyn FnMut(u64)) -> Result<Summary>;

    /// The keys of `container` that start with `prefix` (every key when it is empty), sorted; at
    /// most `limit` of them. Which ones a limit keeps is the backend's to say (the first in key
    /// order where it reads them in order, else the first found).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] or [`Error::Unavailable`] when the store fails.
    fn keys(
        &self,
        container: &str,
        prefix: &str,
        limit: Option<usize>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Vec<String>>;

    /// The entry under `key` in `container`, or `None` when it is absent or expired. Reading it
    /// changes nothing: an expired entry is left for a purge.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] or [`Error::Unavailable`] when the store fails.
    fn entry(&self, container: &str, key: &str) -> Result<Option<Entry>>;
}

/// What [`Inspect::summary`] tells of a container. `None` is "this backend cannot tell".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The live entries.
    pub entries: u64,
    /// The bytes of their stored values (header included), keys and the store's overhead left
    /// out.
    pub bytes: Option<u64>,
    /// The live entries that never expire.
    pub without_expiry: Option<u64>,
    /// When the first of the live entries that expire does, in Unix milliseconds.
    pub oldest_expiry: Option<u64>,
    /// When the last of them does, in Unix milliseconds.
    pub newest_expiry: Option<u64>,
    /// Entries expired but still held, until a read or a purge deletes them.
    pub expired: Option<u64>,
}

/// One entry, as [`Inspect::entry`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The bytes stored: the codec's header, then the value (see [`describe`]).
    pub value: Vec<u8>,
    /// When it expires, in Unix milliseconds; `None`: never.
    pub expires_at: Option<u64>,
}

impl Entry {
    /// An entry of `value`, expiring at `expires_at` (Unix milliseconds) if ever.
    pub fn new(value: Vec<u8>, expires_at: Option<u64>) -> Self {
        Entry { value, expires_at }
    }

    /// The bytes stored.
    pub fn size(&self) -> u64 {
        self.value.len() as u64
    }
}

/// What stored bytes say of themselves: [`describe`].
///
/// For stamped bytes (those of a container that serves stale values: format 4), `stamp` holds
/// the stamp, and `header`, `body` and `value` describe the encoded value inside it as they
/// would the same value stored unstamped. For a remembered generator failure, there is no
/// value: `header` and `value` are `None`, `body` holds the failure's message as stored (its
/// UTF-8 bytes), and [`StampInfo::failure`] the message as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// The codec's header; `None` when the bytes are shorter than one, or are a remembered
    /// failure.
    pub header: Option<Header>,
    /// The encoded value after the header, decompressed where it was compressed and this build
    /// has the algorithm; every byte when there is no header (the message's, for a remembered
    /// failure).
    pub body: Vec<u8>,
    /// The value, where it can be shown.
    pub value: Option<Shown>,
    /// The stamp in front of the value, for bytes that have one.
    pub stamp: Option<StampInfo>,
}

/// What a stamp says of the value behind it: the times that a container serving stale values
/// (`refresh`, `stale_if_error`, `cache_errors`, `early_refresh`) writes with each value, and
/// whether the value is a remembered generator failure.
///
/// Times are Unix milliseconds on the writing process's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampInfo {
    /// When the value is due for a background refresh (`refresh`); `None`: never.
    pub refresh_at: Option<u64>,
    /// When the value expires: after it, it is served only when the generator fails (within the
    /// `stale_if_error` window, which the store's own expiry ends). For a remembered failure:
    /// until when it is remembered. `None`: never.
    pub expires_at: Option<u64>,
    /// Until when a generator failure is remembered (`cache_errors`): no caller calls the
    /// generator for this key before. `None`: no failure remembered.
    pub retry_at: Option<u64>,
    /// How long the value's generation took, in milliseconds.
    pub took_ms: u32,
    /// The message of the generator failure stored in place of a value, if it is one.
    pub failure: Option<String>,
}

/// The header of stored bytes: a format version and the fingerprint of the value's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The format version: 2 for plain values, 3 for compressed ones. (A stamp, format 4, is
    /// read through: [`Described::stamp`]; a header of format 4 is a stamp this build cannot
    /// read.)
    pub format: u8,
    /// Whether this build reads that format.
    pub readable: bool,
    /// The fingerprint of the value's type: a hash of its shape in serde's data model.
    pub fingerprint: u64,
    /// How the body is compressed (`zstd`, `lz4`, or `unknown (N)`), if it is.
    pub compression: Option<String>,
    /// Whether the compressed body could be decompressed (`true` when not compressed).
    pub decompressed: bool,
}

/// A stored value, shown as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The type whose fingerprint the header holds, when it is one this build knows (`String`,
    /// `u64`...); `None` when the value is only seen to decode as a string.
    pub type_name: Option<&'static str>,
    /// The value in Rust's `Debug` form: `"Hello Peter!"`, `42`, `[1, 2]`.
    pub text: String,
}

/// The value types [`describe`] recognises by their fingerprint: a name, the fingerprint, and
/// the value decoded and shown.
type Known = (&'static str, fn() -> u64, fn(&[u8]) -> Option<String>);

const KNOWN: [Known; 18] = [
    known::<String>("String"),
    known::<bool>("bool"),
    known::<char>("char"),
    known::<u8>("u8"),
    known::<u16>("u16"),
    known::<u32>("u32"),
    known::<u64>("u64 or usize"),
    known::<i8>("i8"),
    known::<i16>("i16"),
    known::<i32>("i32"),
    known::<i64>("i64 or isize"),
    known::<f32>("f32"),
    known::<f64>("f64"),
    known::<Vec<u8>>("Vec<u8>"),
    known::<Vec<String>>("Vec<String>"),
    known::<Option<String>>("Option<String>"),
    known::<Vec<u64>>("Vec<u64>"),
    known::<Vec<i64>>("Vec<i64>"),
];

const fn known<V: Value + Debug>(name: &'static str) -> Known {
    (name, fingerprint::<V>, show::<V>)
}

fn show<V: Value + Debug>(bytes: &[u8]) -> Option<String> {
    Codec::<V>::new()
        .decode(bytes)
        .map(|value| format!("{value:?}"))
}

/// The name of the compression of format-3 bytes, by the byte after the fingerprint (as
/// `compress.rs` writes it).
fn compression_name(algorithm: u8) -> String {
    match algorithm {
        1 => "zstd".to_owned(),
        2 => "lz4".to_owned(),
        other => format!("unknown ({other})"),
    }
}

/// Reads what stored bytes say of themselves: the codec's header (format version and type
/// fingerprint), the body, and the value where it can be shown: decoded as its type when the
/// fingerprint is one of the common types this build knows (`String`, the integers, `bool`,
/// `Vec<u8>`...), else as a string when the whole body decodes as one (a newtype of a
/// `String`, a struct of one string field).
///
/// Stamped bytes are read through their stamp: see [`Described`].
pub fn describe(bytes: &[u8]) -> Described {
    let Some((stamp, body)) = Stamp::split(bytes) else {
        return describe_value(bytes);
    };
    let at = |millis: u64| (millis != 0).then_some(millis);
    let info = StampInfo {
        refresh_at: at(stamp.refresh_at),
        expires_at: at(stamp.expires_at),
        retry_at: at(stamp.retry_at),
        took_ms: stamp.took_ms,
        failure: stamp
            .failure
            .then(|| String::from_utf8_lossy(body).into_owned()),
    };
    if stamp.failure {
        return Described {
            header: None,
            body: body.to_vec(),
            value: None,
            stamp: Some(info),
        };
    }
    Described {
        stamp: Some(info),
        ..describe_value(body)
    }
}

/// [`describe`] of an unstamped value's bytes.
fn describe_value(bytes: &[u8]) -> Described {
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Described {
            header: None,
            body: bytes.to_vec(),
            value: None,
            stamp: None,
        };
    };
    let format = header[0];
    let fingerprint = u64::from_le_bytes(header[1..].try_into().expect("8 bytes"));
    let rest = &bytes[HEADER_LEN..];
    let (compression, body) = if format == compress::COMPRESSED {
        let name = rest
            .first()
            .map_or_else(|| "none".to_owned(), |&a| compression_name(a));
        match compress::decompress(rest) {
            Some(body) => (Some((name, true)), body),
            None => (Some((name, false)), rest.to_vec()),
        }
    } else {
        (None, rest.to_vec())
    };
    let readable = format == FORMAT || format == compress::COMPRESSED;
    let decompressed = compression.as_ref().is_none_or(|(_, done)| *done);
    let value = if readable && decompressed {
        KNOWN
            .iter()
            .find(|(_, known, _)| known() == fingerprint)
            .and_then(|(name, _, show)| {
                show(bytes).map(|text| Shown {
                    type_name: Some(name),
                    text,
                })
            })
            .or_else(|| {
                as_string(&body).map(|text| Shown {
                    type_name: None,
                    text,
                })
            })
    } else {
        None
    };
    Described {
        header: Some(Header {
            format,
            readable,
            fingerprint,
            compression: compression.map(|(name, _)| name),
            decompressed,
        }),
        body,
        value,
        stamp: None,
    }
}

/// `body` shown as a string, when all of it decodes as one.
fn as_string(body: &[u8]) -> Option<String> {
    decode_whole::<String>(body).map(|text| format!("{text:?}"))
}

fn decode_whole<V: DeserializeOwned>(body: &[u8]) -> Option<V> {
    match bincode::serde::decode_from_slice(body, bincode::config::standard()) {
        Ok((value, read)) if read == body.len() => Some(value),
        _ => None,
    }
}

/// The smallest string greater than every string that starts with `prefix`, in byte order (which
/// is code point order): the exclusive end of a range scan for keys with that prefix, `key >=
/// prefix AND key < end`. `None` when there is none (an empty prefix, or one of `char::MAX`
/// only): scan to the end.
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

impl Config {
    /// The name of the backend that container `container` is declared on, if it is declared.
    pub fn container_backend(&self, container: &str) -> Option<&str> {
        self.containers.get(container)?.backend.as_deref()
    }

    /// The kind of the backend declared as `name`, as written (`file`, or an alias).
    pub fn backend_kind(&self, name: &str) -> Option<&str> {
        let (kind, _) = self.backends.get(name)?.kind.as_ref()?;
        Some(kind)
    }

    /// Opens the backend declared as `name`, alone, on the system clock: as
    /// [`KvCache::new`](crate::KvCache::new) opens each of its backends, without making any
    /// container or looking any generator up. For tools that look at a cache from outside the
    /// application (the `kvcache` command), where the application's generators are not linked.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when no backend is declared as `name`, for an option the kind
    /// does not accept or a malformed `outage_backoff`; [`Error::UnknownBackend`] for a kind no
    /// linked crate registers; and the backend's own errors when it cannot be opened
    /// ([`Error::Unavailable`] when its server cannot be reached).
    pub fn open_backend(&self, name: &str) -> Result<Arc<dyn Backend>> {
        let spec = self.backends.get(name).ok_or_else(|| {
            let declared: Vec<&str> = self.backend_names().collect();
            Error::config(
                format!("backend.{name}"),
                format!(
                    "is not declared (declared: {})",
                    if declared.is_empty() {
                        "none".to_owned()
                    } else {
                        declared.join(", ")
                    }
                ),
            )
        })?;
        let prepared =
            crate::cache::prepare_backend(name, spec, Arc::new(crate::clock::SystemClock))?;
        prepared.registration.open(&prepared.config)
    }
}

#[cfg(test)]
mod tests {
    use super::{Codec, StampInfo, describe, prefix_end};
    use crate::stamp::Stamp;

    #[test]
    fn known_types_are_named_and_shown() {
        let bytes = Codec::<u64>::new().encode(&42).unwrap();
        let described = describe(&bytes);
        let header = described.header.unwrap();
        assert_eq!(header.format, 2);
        assert!(header.readable && header.decompressed && header.compression.is_none());
        let value = described.value.unwrap();
        assert_eq!(value.type_name, Some("u64 or usize"));
        assert_eq!(value.text, "42");

        let bytes = Codec::<Vec<String>>::new()
            .encode(&vec!["a".to_owned()])
            .unwrap();
        assert_eq!(describe(&bytes).value.unwrap().text, "[\"a\"]");
    }

    #[test]
    fn an_unknown_type_is_shown_when_it_decodes_as_a_string_and_not_otherwise() {
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        struct Name(String);
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        struct Point {
            x: i32,
            y: i32,
        }
        let bytes = Codec::<Name>::new().encode(&Name("Ann".into())).unwrap();
        let value = describe(&bytes).value.unwrap();
        assert_eq!((value.type_name, value.text.as_str()), (None, "\"Ann\""));

        let bytes = Codec::<Point>::new().encode(&Point { x: 1, y: 2 }).unwrap();
        let described = describe(&bytes);
        assert_eq!(described.value, None);
        assert_eq!(described.body, [2, 4], "zigzag varints");
    }

    #[test]
    fn bytes_without_a_header_or_of_another_format_are_not_decoded() {
        let described = describe(b"short");
        assert_eq!(described.header, None);
        assert_eq!(described.body, b"short");

        let mut bytes = Codec::<String>::new().encode(&"x".to_owned()).unwrap();
        bytes[0] = 1;
        let described = describe(&bytes);
        assert!(!described.header.unwrap().readable);
        assert_eq!(described.value, None);
    }

    #[test]
    fn a_stamped_value_is_described_through_its_stamp() {
        let encoded = Codec::<String>::new()
            .encode(&"Hello Peter!".to_owned())
            .unwrap();
        let mut bytes = Vec::new();
        Stamp {
            refresh_at: 1_000,
            expires_at: 2_000,
            retry_at: 0,
            took_ms: 7,
            failure: false,
        }
        .write(&mut bytes);
        bytes.extend_from_slice(&encoded);
        let described = describe(&bytes);
        assert_eq!(
            described.stamp,
            Some(StampInfo {
                refresh_at: Some(1_000),
                expires_at: Some(2_000),
                retry_at: None,
                took_ms: 7,
                failure: None,
            })
        );
        // Header, body and value: those of the value stored unstamped.
        let unstamped = describe(&encoded);
        assert_eq!(unstamped.stamp, None);
        assert_eq!(described.header, unstamped.header);
        assert_eq!(described.body, unstamped.body);
        assert_eq!(described.value, unstamped.value);
        let value = described.value.unwrap();
        assert_eq!(value.type_name, Some("String"));
        assert_eq!(value.text, "\"Hello Peter!\"");
    }

    #[test]
    fn a_remembered_failure_is_its_message_and_no_value() {
        let mut bytes = Vec::new();
        Stamp {
            expires_at: 5_000,
            retry_at: 4_000,
            failure: true,
            ..Stamp::default()
        }
        .write(&mut bytes);
        bytes.extend_from_slice("upstream down: é".as_bytes());
        let described = describe(&bytes);
        assert_eq!(described.header, None);
        assert_eq!(described.value, None);
        assert_eq!(described.body, "upstream down: é".as_bytes());
        let stamp = described.stamp.unwrap();
        assert_eq!(stamp.failure.as_deref(), Some("upstream down: é"));
        assert_eq!(
            (
                stamp.refresh_at,
                stamp.expires_at,
                stamp.retry_at,
                stamp.took_ms
            ),
            (None, Some(5_000), Some(4_000), 0)
        );
    }

    #[test]
    fn a_truncated_stamp_is_a_header_of_an_unreadable_format() {
        let mut bytes = Vec::new();
        Stamp::default().write(&mut bytes);
        let described = describe(&bytes[..20]);
        assert_eq!(described.stamp, None);
        let header = described.header.unwrap();
        assert_eq!(header.format, 4);
        assert!(!header.readable);
        assert_eq!(described.value, None);
    }

    #[cfg(any(feature = "zstd", feature = "lz4"))]
    #[test]
    fn compressed_values_are_named_decompressed_and_shown() {
        use crate::options::Compression;
        let compressions = [
            #[cfg(feature = "zstd")]
            (Compression::Zstd, "zstd"),
            #[cfg(feature = "lz4")]
            (Compression::Lz4, "lz4"),
        ];
        let text = "a value that repeats itself, ".repeat(20);
        for (compression, name) in compressions {
            let bytes = Codec::<String>::new()
                .compressing(Some((compression, 16)))
                .encode(&text)
                .unwrap();
            let described = describe(&bytes);
            let header = described.header.unwrap();
            assert_eq!(header.format, 3, "{name}");
            assert_eq!(header.compression.as_deref(), Some(name));
            assert!(header.decompressed && header.readable);
            // bincode: 251, then the length in two bytes, then the text.
            assert_eq!(
                described.body.len(),
                3 + text.len(),
                "{name}: the plain body"
            );
            assert_eq!(described.value.unwrap().text, format!("{text:?}"));
        }
    }

    #[test]
    fn prefix_ends_bound_exactly_the_strings_with_the_prefix() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("a\u{d7ff}").as_deref(), Some("a\u{e000}"));
        assert_eq!(prefix_end("a\u{10ffff}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10ffff}"), None);
        let end = prefix_end("key:").unwrap();
        for key in ["key:", "key:1", "key:\u{10ffff}"] {
            assert!(key >= "key:" && key < end.as_str(), "{key}");
        }
        for key in ["key", "key;", "kez"] {
            assert!(!(key >= "key:" && key < end.as_str()), "{key}");
        }
    }
}
