//! Static deltas: the content an update from one image to another needs,
//! in a few large files instead of one request per object. A delta is
//! named by its two image digests (`deltas/FROM-TO/`) and holds:
//!
//! - `superblock`: zstd-compressed JSON ([`Superblock`]) listing the parts
//!   and, per part, its frames;
//! - parts `0`, `1`, …: zstd frames back to back. A frame either patches
//!   one file against a source the client already has (zstd's
//!   `--patch-from`: the source is the frame's reference prefix), or
//!   packs new files, concatenated in path order so that alike files
//!   compress together.
//!
//! The first part carries the target commit's dumpfile as a patch of the
//! source commit's, since a dumpfile is most of a commit's metadata.
//! Nothing in a delta is trusted: the superblock's SHA-256 is in the
//! signed index, each part's is in the superblock, and every object
//! made from it must have the digest the signed tree names.

mod apply;
mod generate;

pub use apply::{apply_frames, parse_digest, read_superblock, rebuild_blob, Applied};
pub use generate::{generate, Generated};

use serde::{Deserialize, Serialize};

use crate::repo::RepoError;

/// A delta's directory name: its source and target image digests, hex.
pub fn name(from_image: &str, to_image: &str) -> String {
    format!("{from_image}-{to_image}")
}

/// Parts are cut after the first frame that takes them past this many
/// bytes: a few requests for an update, each resumable on its own.
pub const PART_TARGET: u64 = 4 << 20;
/// New files are packed into frames of at most this many bytes
/// uncompressed (one larger file has a frame of its own).
pub const PACK_LIMIT: u64 = 8 << 20;
/// A file is patched only against a source of at most this size, and only
/// up to this size itself: both are in memory when the patch is made and
/// applied, and zstd's window must span them.
pub const PATCH_LIMIT: u64 = 64 << 20;
/// The largest zstd window a frame may ask for: 2^28 bytes.
pub const WINDOW_LOG_MAX: u32 = 28;
/// The superblock, inflated, is a few lines per object.
pub const SUPERBLOCK_LIMIT: u64 = 64 << 20;
/// A superblock file's `type`.
pub const SUPERBLOCK_TYPE: &str = "sealtree-delta-v1";

/// `superblock`, inflated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Superblock {
    /// Image digest of the commit the delta applies to, hex.
    pub from: String,
    /// Image digest of the commit it makes, hex.
    pub to: String,
    pub parts: Vec<Part>,
    /// Always [`SUPERBLOCK_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
}

/// One part file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// SHA-256 of the part file, hex.
    pub sha256: String,
    pub size: u64,
    pub frames: Vec<Frame>,
}

/// One zstd frame of a part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frame {
    /// Its compressed length in the part.
    pub len: u64,
    /// What it patches, if anything: its reference prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// What it decompresses to.
    pub output: Output,
}

/// Content the client has already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// An object, by fs-verity digest (hex).
    Object(String),
    /// A git blob, by id (hex): the source commit's dumpfile.
    Blob(String),
}

/// What a frame makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Output {
    /// Objects, by fs-verity digest (hex), concatenated; their sizes are
    /// the ones the target's signed tree names.
    Objects(Vec<String>),
    /// A git blob: the target commit's dumpfile.
    Blob(String),
}

/// Why a delta could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("{0}")]
    Invalid(String),
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> DeltaError {
    move |e| DeltaError::Invalid(format!("{what}: {e}"))
}
