//! Compressing an encoded value's body, and the byte that says how it was compressed.
//!
//! A compressed value is the codec's header with [`COMPRESSED`] for its format byte, the
//! fingerprint, one byte naming the algorithm, then the compressed bincode body. Each
//! algorithm's frame records the body's length, which is checked against [`MAX_BODY`] before
//! anything is allocated, so a corrupt or hostile value cannot make a reader allocate more.

use crate::error::BoxError;
use crate::options::Compression;

/// The format byte of a compressed value (the plain format is 2).
pub(crate) const COMPRESSED: u8 = 3;
/// The longest body a compressed value may claim: 1 GiB.
#[cfg(any(feature = "zstd", feature = "lz4"))]
const MAX_BODY: usize = 1 << 30;

const ZSTD: u8 = 1;
const LZ4: u8 = 2;
#[cfg(feature = "zstd")]
const ZSTD_LEVEL: i32 = 3;

/// Appends the algorithm byte and `body` compressed with `compression` to `out`.
pub(crate) fn compress(
    compression: Compression,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), BoxError> {
    match compression {
        Compression::Zstd => {
            #[cfg(feature = "zstd")]
            {
                out.push(ZSTD);
                out.extend_from_slice(&zstd::bulk::compress(body, ZSTD_LEVEL)?);
                Ok(())
            }
            #[cfg(not(feature = "zstd"))]
            {
                let _ = (body, out);
                Err("zstd is not built in: enable kvcache's `zstd` feature".into())
            }
        }
        Compression::Lz4 => {
            #[cfg(feature = "lz4")]
            {
                out.push(LZ4);
                out.extend_from_slice(&lz4_flex::compress_prepend_size(body));
                Ok(())
            }
            #[cfg(not(feature = "lz4"))]
            {
                let _ = (body, out);
                Err("lz4 is not built in: enable kvcache's `lz4` feature".into())
            }
        }
    }
}

/// The body of a compressed value (what follows its fingerprint), or `None` when it is
/// corrupt, too long, or compressed by an algorithm this build lacks.
pub(crate) fn decompress(compressed: &[u8]) -> Option<Vec<u8>> {
    let (&algorithm, frame) = compressed.split_first()?;
    match algorithm {
        #[cfg(feature = "zstd")]
        ZSTD => {
            let length = zstd::zstd_safe::get_frame_content_size(frame).ok()??;
            let length = usize::try_from(length).ok().filter(|&n| n <= MAX_BODY)?;
            zstd::bulk::decompress(frame, length).ok()
        }
        #[cfg(feature = "lz4")]
        LZ4 => {
            let prefix: [u8; 4] = frame.get(..4)?.try_into().ok()?;
            let length = u32::from_le_bytes(prefix) as usize;
            if length > MAX_BODY {
                return None;
            }
            lz4_flex::decompress_size_prepended(frame).ok()
        }
        unknown => {
            let _ = frame;
            tracing::debug!(
                algorithm = unknown,
                zstd = ZSTD,
                lz4 = LZ4,
                "a value compressed by an algorithm this build lacks: a miss"
            );
            None
        }
    }
}
