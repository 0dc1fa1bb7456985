//! Making a delta between two commits of this repository, deterministic
//! byte for byte, and reused once made.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use gix::ObjectId;
use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use super::{io_err, DeltaError, Frame, Output, Part, Source, Superblock};
use super::{PACK_LIMIT, PART_TARGET, PATCH_LIMIT, SUPERBLOCK_TYPE, WINDOW_LOG_MAX};
use crate::fsverity::Digest;
use crate::repo::Repo;
use crate::tree::{FileType, Tree};

/// zstd's level: a delta is made once and fetched by every client.
const LEVEL: i32 = 19;
/// Frames encoded at once (in parallel) before they are written out.
const BATCH: usize = 32;

/// A delta written or found.
#[derive(Debug)]
pub struct Generated {
    /// `FROM-TO`, image digests.
    pub name: String,
    /// SHA-256 of the `superblock` file, hex, and its size.
    pub superblock_sha256: String,
    pub superblock_size: u64,
    /// Bytes of all its files.
    pub bytes: u64,
    /// It was there already.
    pub reused: bool,
}

/// What one frame is made of.
enum Spec {
    /// The target commit's dumpfile against the source commit's.
    Dump { from: ObjectId, to: ObjectId },
    /// One object against another.
    Patch { source: Digest, target: Digest },
    /// New objects, concatenated, and their sizes.
    Pack(Vec<(Digest, u64)>),
}

/// Make `deltas/FROM-TO/` for commits `from` and `to` (by their image
/// digests), unless it is there.
pub fn generate(repo: &Repo, from: ObjectId, to: ObjectId) -> Result<Generated, DeltaError> {
    let history = repo.history()?;
    let (from_meta, to_meta) = (history.info(from)?.meta, history.info(to)?.meta);
    let name = super::name(&from_meta.image_digest, &to_meta.image_digest);
    let deltas = repo.root().join("deltas");
    let dir = deltas.join(&name);
    if dir.join("superblock").is_file() {
        return existing(name, &dir);
    }
    let specs = plan(
        &repo.tree(from)?,
        &repo.tree(to)?,
        history.dump_id(from)?,
        history.dump_id(to)?,
    );
    let tmp = deltas.join(format!("{}{name}", crate::lockfile::TEMP_PREFIX));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(tmp.display()))?;
    }
    fs::create_dir_all(&tmp).map_err(io_err(tmp.display()))?;
    let superblock = write_parts(
        repo,
        &specs,
        &tmp,
        &from_meta.image_digest,
        &to_meta.image_digest,
    )?;
    let json = serde_json::to_vec(&superblock).expect("a superblock serializes");
    let packed = zstd::bulk::compress(&json, LEVEL).map_err(io_err("compressing a superblock"))?;
    write_synced(&tmp.join("superblock"), &packed)?;
    sync(&tmp)?;
    fs::rename(&tmp, &dir).map_err(io_err(dir.display()))?;
    sync(&deltas)?;
    let mut generated = existing(name, &dir)?;
    generated.reused = false;
    Ok(generated)
}

fn existing(name: String, dir: &Path) -> Result<Generated, DeltaError> {
    let superblock = fs::read(dir.join("superblock")).map_err(io_err(dir.display()))?;
    let mut bytes = 0;
    for entry in fs::read_dir(dir).map_err(io_err(dir.display()))? {
        let entry = entry.map_err(io_err(dir.display()))?;
        bytes += entry.metadata().map_err(io_err(dir.display()))?.len();
    }
    Ok(Generated {
        name,
        superblock_sha256: hex::encode(Sha256::digest(&superblock)),
        superblock_size: superblock.len() as u64,
        bytes,
        reused: true,
    })
}

/// Regular files kept outside the image, by path (bytewise order):
/// their digest and size.
fn files(tree: &Tree) -> Vec<(Vec<u8>, Digest, u64)> {
    let mut out = Vec::new();
    tree.walk(|path, id, hardlink| {
        let inode = &tree.inodes[id];
        if hardlink
            || inode.file_type() != Some(FileType::Regular)
            || inode.size == 0
            || inode.content.is_some()
        {
            return;
        }
        if let Some(digest) = inode.digest {
            out.push((path.join(&b'/'), digest, inode.size));
        }
    });
    out
}

/// A path with its runs of digits made one `#`: a file renamed for a new
/// version (`libfoo-2.4.so` for `libfoo-2.3.so`) has the same stem.
fn stem(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        if !b.is_ascii_digit() {
            out.push(b);
        } else if out.last() != Some(&b'#') {
            out.push(b'#');
        }
    }
    out
}

/// The frames of a delta: the dumpfile; each changed file patched against
/// the file at its path before, or else the one file of its stem; the
/// rest packed in path order.
fn plan(old: &Tree, new: &Tree, old_dump: ObjectId, new_dump: ObjectId) -> Vec<Spec> {
    let old = files(old);
    let have: HashSet<Digest> = old.iter().map(|f| f.1).collect();
    let by_path: HashMap<&[u8], (Digest, u64)> = old
        .iter()
        .map(|(p, d, s)| (p.as_slice(), (*d, *s)))
        .collect();
    let mut by_stem: HashMap<Vec<u8>, Option<(Digest, u64)>> = HashMap::new();
    for (path, digest, size) in &old {
        by_stem
            .entry(stem(path))
            .and_modify(|s| *s = s.filter(|(d, _)| d == digest))
            .or_insert(Some((*digest, *size)));
    }
    let mut specs = vec![Spec::Dump {
        from: old_dump,
        to: new_dump,
    }];
    let mut seen = HashSet::new();
    let mut fresh = Vec::new();
    for (path, digest, size) in files(new) {
        if have.contains(&digest) || !seen.insert(digest) {
            continue;
        }
        let source = by_path
            .get(path.as_slice())
            .copied()
            .or_else(|| by_stem.get(&stem(&path)).copied().flatten())
            .filter(|(_, s)| *s <= PATCH_LIMIT && size <= PATCH_LIMIT);
        match source {
            Some((source, _)) => specs.push(Spec::Patch {
                source,
                target: digest,
            }),
            None => fresh.push((digest, size)),
        }
    }
    let mut pack = Vec::new();
    let mut packed = 0;
    for (digest, size) in fresh {
        if !pack.is_empty() && packed + size > PACK_LIMIT {
            specs.push(Spec::Pack(std::mem::take(&mut pack)));
            packed = 0;
        }
        pack.push((digest, size));
        packed += size;
    }
    if !pack.is_empty() {
        specs.push(Spec::Pack(pack));
    }
    specs
}

/// Encode the frames, in parallel a batch at a time, into part files in
/// `dir`: the dumpfile's frame alone in part 0, as a pull needs it first;
/// then a new part once one passes [`PART_TARGET`].
fn write_parts(
    repo: &Repo,
    specs: &[Spec],
    dir: &Path,
    from: &str,
    to: &str,
) -> Result<Superblock, DeltaError> {
    let mut parts: Vec<Part> = Vec::new();
    let mut current: Option<(File, Sha256, Part)> = None;
    let finish = |(file, hasher, mut part): (File, Sha256, Part), parts: &mut Vec<Part>| {
        file.sync_all().map_err(io_err(dir.display()))?;
        part.sha256 = hex::encode(hasher.finalize());
        parts.push(part);
        Ok::<_, DeltaError>(())
    };
    for batch in specs.chunks(BATCH) {
        let encoded: Vec<(Vec<u8>, Frame)> = batch
            .par_iter()
            .map(|spec| encode(repo, spec))
            .collect::<Result<_, _>>()?;
        for (bytes, frame) in encoded {
            let full = current.as_ref().is_some_and(|(_, _, p)| {
                p.size >= PART_TARGET || matches!(p.frames[0].output, Output::Blob(_))
            });
            if full {
                finish(current.take().expect("a part is open"), &mut parts)?;
            }
            let (file, hasher, part) = match &mut current {
                Some(c) => c,
                None => {
                    let path = dir.join(parts.len().to_string());
                    let file = File::create(&path).map_err(io_err(path.display()))?;
                    current.insert((
                        file,
                        Sha256::new(),
                        Part {
                            sha256: String::new(),
                            size: 0,
                            frames: Vec::new(),
                        },
                    ))
                }
            };
            file.write_all(&bytes).map_err(io_err(dir.display()))?;
            hasher.update(&bytes);
            part.size += bytes.len() as u64;
            part.frames.push(frame);
        }
    }
    if let Some(c) = current.take() {
        finish(c, &mut parts)?;
    }
    Ok(Superblock {
        from: from.to_string(),
        to: to.to_string(),
        parts,
        kind: SUPERBLOCK_TYPE.to_string(),
    })
}

/// One frame's bytes and its description.
fn encode(repo: &Repo, spec: &Spec) -> Result<(Vec<u8>, Frame), DeltaError> {
    let fail = io_err("compressing a delta frame");
    let (source, output, bytes) = match spec {
        Spec::Dump { from, to } => {
            let history = repo.history()?;
            let (prefix, target) = (history.blob(*from)?, history.blob(*to)?);
            let bytes = compress(&prefix, target.len() as u64, |w| w.write_all(&target));
            (
                Some(Source::Blob(from.to_string())),
                Output::Blob(to.to_string()),
                bytes.map_err(fail)?,
            )
        }
        Spec::Patch { source, target } => {
            let (prefix, target_bytes) = (read_object(repo, source)?, read_object(repo, target)?);
            let bytes = compress(&prefix, target_bytes.len() as u64, |w| {
                w.write_all(&target_bytes)
            });
            (
                Some(Source::Object(hex::encode(source))),
                Output::Objects(vec![hex::encode(target)]),
                bytes.map_err(fail)?,
            )
        }
        Spec::Pack(files) => {
            // Streamed from the objects: a pack may be one large file.
            let len = files.iter().map(|f| f.1).sum();
            let bytes = compress(&[], len, |w| {
                for (digest, _) in files {
                    std::io::copy(&mut repo.objects().open_object(digest)?, w)?;
                }
                Ok(())
            });
            (
                None,
                Output::Objects(files.iter().map(|f| hex::encode(f.0)).collect()),
                bytes.map_err(fail)?,
            )
        }
    };
    let frame = Frame {
        len: bytes.len() as u64,
        source,
        output,
    };
    Ok((bytes, frame))
}

/// `len` bytes that `write` writes, compressed. With a `prefix` they are
/// compressed against it (zstd's `--patch-from`), in a window that spans
/// both; without, in zstd's own window for the level.
fn compress(
    prefix: &[u8],
    len: u64,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<Vec<u8>> {
    let span = (prefix.len() as u64 + len).max(2);
    let max = if prefix.is_empty() {
        23
    } else {
        WINDOW_LOG_MAX
    };
    let window_log = (64 - (span - 1).leading_zeros()).clamp(10, max);
    let mut encoder = if prefix.is_empty() {
        zstd::stream::Encoder::new(Vec::new(), LEVEL)?
    } else {
        zstd::stream::Encoder::with_ref_prefix(Vec::new(), LEVEL, prefix)?
    };
    encoder.window_log(window_log)?;
    encoder.set_pledged_src_size(Some(len))?;
    encoder.include_checksum(false)?;
    write(&mut encoder)?;
    encoder.finish()
}

fn read_object(repo: &Repo, digest: &Digest) -> Result<Vec<u8>, DeltaError> {
    let path = repo.objects().path(digest);
    let mut out = Vec::new();
    repo.objects()
        .open_object(digest)
        .and_then(|mut f| f.read_to_end(&mut out))
        .map_err(io_err(path.display()))?;
    Ok(out)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), DeltaError> {
    let mut file = File::create(path).map_err(io_err(path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_err(path.display()))
}

fn sync(dir: &Path) -> Result<(), DeltaError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir.display()))
}
