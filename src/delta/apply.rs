//! Using a delta: its superblock inflated and checked, the dumpfile
//! rebuilt, and objects rebuilt from a part into a staging area, each
//! checked against the digest the signed tree names before it is kept.
//! The caller checks each part's SHA-256 before it is applied.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};

use super::{DeltaError, Frame, Output, Part, Source, Superblock};
use super::{SUPERBLOCK_LIMIT, SUPERBLOCK_TYPE, WINDOW_LOG_MAX};
use crate::fsverity::Digest;
use crate::objects::{ObjectStore, Staging};

fn invalid(what: &str, why: impl std::fmt::Display) -> DeltaError {
    DeltaError::Invalid(format!("{what}: {why}"))
}

/// The superblock in `bytes` (read from `what`), which must be of the
/// delta from image `from` to image `to`.
pub fn read_superblock(
    bytes: &[u8],
    what: &str,
    from: &str,
    to: &str,
) -> Result<Superblock, DeltaError> {
    let mut json = Vec::new();
    zstd::stream::Decoder::new(bytes)
        .and_then(|d| d.take(SUPERBLOCK_LIMIT + 1).read_to_end(&mut json))
        .map_err(|e| invalid(what, format!("not a zstd stream: {e}")))?;
    if json.len() as u64 > SUPERBLOCK_LIMIT {
        return Err(invalid(
            what,
            format!("inflates to more than {SUPERBLOCK_LIMIT} bytes"),
        ));
    }
    let superblock: Superblock = serde_json::from_slice(&json).map_err(|e| invalid(what, e))?;
    if superblock.kind != SUPERBLOCK_TYPE || superblock.from != from || superblock.to != to {
        return Err(invalid(
            what,
            format!(
                "a {} delta from {} to {}, not a {SUPERBLOCK_TYPE} delta from {from} to {to}",
                superblock.kind, superblock.from, superblock.to
            ),
        ));
    }
    for (i, part) in superblock.parts.iter().enumerate() {
        let sum = part
            .frames
            .iter()
            .try_fold(0u64, |a, f| a.checked_add(f.len));
        if sum != Some(part.size) {
            return Err(invalid(
                what,
                format!(
                    "part {i} is {} bytes, its frames do not add up to that",
                    part.size
                ),
            ));
        }
    }
    Ok(superblock)
}

/// A reader of the frame at `offset` in `file`, inflated, with `prefix`
/// as its reference.
fn inflate<'a>(
    file: &'a mut File,
    offset: u64,
    frame: &Frame,
    prefix: &'a [u8],
) -> std::io::Result<impl Read + 'a> {
    file.seek(SeekFrom::Start(offset))?;
    let compressed = BufReader::new(file.take(frame.len));
    let mut decoder = if prefix.is_empty() {
        zstd::stream::Decoder::with_buffer(compressed)?
    } else {
        zstd::stream::Decoder::with_ref_prefix(compressed, prefix)?
    };
    decoder.window_log_max(WINDOW_LOG_MAX)?;
    Ok(decoder)
}

/// Whether `reader` has nothing left.
fn at_end(reader: &mut impl Read) -> std::io::Result<bool> {
    Ok(reader.read(&mut [0u8; 1])? == 0)
}

/// The blob frame `frame` (at `offset` in `file`) rebuilt against
/// `source`: at most `limit` bytes. The caller checks its git id.
pub fn rebuild_blob(
    file: &mut File,
    offset: u64,
    frame: &Frame,
    source: &[u8],
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, DeltaError> {
    let mut out = Vec::new();
    inflate(file, offset, frame, source)
        .and_then(|d| d.take(limit + 1).read_to_end(&mut out))
        .map_err(|e| invalid(what, format!("the dumpfile's frame: {e}")))?;
    if out.len() as u64 > limit {
        return Err(invalid(
            what,
            format!("the dumpfile's frame makes more than {limit} bytes"),
        ));
    }
    Ok(out)
}

/// What applying a part did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Objects rebuilt and staged.
    pub objects: u64,
    /// Frames passed over: their objects are here already, or their source
    /// is not (the objects are then fetched whole).
    pub skipped: u64,
}

/// Rebuild the objects of `part` (its file already checked) into
/// `staging`. `wanted` are the objects the target commit needs and their
/// sizes: a frame naming another object is refused, and each object must
/// hash to the digest it is named by. Blob frames are the caller's.
pub fn apply_frames(
    part: &Part,
    file: &mut File,
    store: &ObjectStore,
    staging: &Staging,
    wanted: &HashMap<Digest, u64>,
    what: &str,
) -> Result<Applied, DeltaError> {
    let mut applied = Applied::default();
    let mut offset = 0;
    for frame in &part.frames {
        let at = offset;
        offset += frame.len;
        let Output::Objects(names) = &frame.output else {
            continue;
        };
        let digests = names
            .iter()
            .map(|n| parse_digest(n).ok_or_else(|| invalid(what, format!("'{n}' is not a digest"))))
            .collect::<Result<Vec<_>, _>>()?;
        if digests.iter().all(|d| staging.stored(d)) {
            applied.skipped += 1;
            continue;
        }
        let prefix = match &frame.source {
            None => Vec::new(),
            Some(Source::Blob(id)) => {
                return Err(invalid(
                    what,
                    format!("an object frame patched against blob {id}"),
                ))
            }
            Some(Source::Object(name)) => {
                let digest = parse_digest(name)
                    .ok_or_else(|| invalid(what, format!("'{name}' is not a digest")))?;
                match read_source(store, &digest) {
                    Some(bytes) => bytes,
                    None => {
                        applied.skipped += 1;
                        continue;
                    }
                }
            }
        };
        let mut reader = inflate(file, at, frame, &prefix)
            .map_err(|e| invalid(what, format!("frame at byte {at}: {e}")))?;
        for digest in &digests {
            let hex = hex::encode(digest);
            let size = *wanted.get(digest).ok_or_else(|| {
                invalid(what, format!("object {hex} is not one the commit needs"))
            })?;
            let mut body = (&mut reader).take(size);
            let made = staging
                .add_expected(&mut body, digest)
                .map_err(|e| invalid(what, format!("object {hex}: {e}")))?;
            match made {
                Ok(len) if len == size => applied.objects += 1,
                Ok(len) => {
                    return Err(invalid(
                        what,
                        format!("object {hex}: {len} bytes, the signed tree names {size}"),
                    ))
                }
                Err(actual) => {
                    return Err(invalid(
                        what,
                        format!(
                            "object {hex} rebuilt with digest {}; not stored",
                            hex::encode(actual)
                        ),
                    ))
                }
            }
        }
        if !at_end(&mut reader).map_err(|e| invalid(what, format!("frame at byte {at}: {e}")))? {
            return Err(invalid(
                what,
                format!("frame at byte {at} holds more than its objects"),
            ));
        }
    }
    Ok(applied)
}

/// A digest named in a superblock (hex).
pub fn parse_digest(hex: &str) -> Option<Digest> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex, &mut digest).ok()?;
    Some(digest)
}

/// A source object's bytes, if the store has it (and it is no larger than
/// a patch's source may be).
fn read_source(store: &ObjectStore, digest: &Digest) -> Option<Vec<u8>> {
    let file = store.open_object(digest).ok()?;
    let mut bytes = Vec::new();
    file.take(super::PATCH_LIMIT + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    (bytes.len() as u64 <= super::PATCH_LIMIT).then_some(bytes)
}
