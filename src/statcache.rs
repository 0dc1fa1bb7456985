//! The stat cache: for each file a commit hashed, its identity and change
//! stamps (device, inode, size, mtime, ctime) and its digest, so a later
//! commit of an unchanged tree trusts the digest instead of re-reading.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::fsverity::Digest;

const MAGIC: &[u8; 8] = b"STCACHE1";
const RECORD: usize = 7 * 8 + 32;

/// What identifies a file's content without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl FileStamp {
    pub fn of(meta: &Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Digests of files by stamp.
#[derive(Default)]
pub struct StatCache {
    /// Sorted by device and inode: a sorted list takes half the memory of
    /// a hash map, which matters at a million files.
    entries: Vec<(FileStamp, Digest)>,
}

impl StatCache {
    /// Load the cache; a missing or unreadable cache is an empty one.
    pub fn load(path: &Path) -> StatCache {
        let Ok(bytes) = fs::read(path) else {
            return StatCache::default();
        };
        let Some(body) = bytes.strip_prefix(MAGIC) else {
            return StatCache::default();
        };
        if body.len() % RECORD != 0 {
            return StatCache::default();
        }
        let mut entries = Vec::with_capacity(body.len() / RECORD);
        for rec in body.chunks_exact(RECORD) {
            let n = |i: usize| u64::from_le_bytes(rec[i * 8..i * 8 + 8].try_into().unwrap());
            let stamp = FileStamp {
                dev: n(0),
                ino: n(1),
                size: n(2),
                mtime: (n(3) as i64, n(4) as i64),
                ctime: (n(5) as i64, n(6) as i64),
            };
            let digest: Digest = rec[56..].try_into().unwrap();
            entries.push((stamp, digest));
        }
        entries.sort_unstable_by_key(|(s, _)| (s.dev, s.ino));
        StatCache { entries }
    }

    /// The digest of a file whose stamp is unchanged.
    pub fn get(&self, stamp: &FileStamp) -> Option<Digest> {
        let at = self
            .entries
            .binary_search_by_key(&(stamp.dev, stamp.ino), |(s, _)| (s.dev, s.ino))
            .ok()?;
        let (s, d) = &self.entries[at];
        (s == stamp).then_some(*d)
    }

    /// Write the cache for `files` atomically. Files changed within a
    /// second of `started` (nanoseconds since the epoch, taken before they
    /// were read) are left out: a write in the same timestamp tick could
    /// leave their stamps unchanged.
    pub fn save(path: &Path, files: &[(FileStamp, Digest)], started: i128) -> io::Result<()> {
        let mut out = Vec::with_capacity(MAGIC.len() + files.len() * RECORD);
        out.extend_from_slice(MAGIC);
        for (s, d) in files {
            let ns = |t: (i64, i64)| t.0 as i128 * 1_000_000_000 + t.1 as i128;
            if ns(s.ctime) >= started - 1_000_000_000 || ns(s.mtime) >= started - 1_000_000_000 {
                continue;
            }
            for v in [
                s.dev,
                s.ino,
                s.size,
                s.mtime.0 as u64,
                s.mtime.1 as u64,
                s.ctime.0 as u64,
                s.ctime.1 as u64,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(d);
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        io::Write::write_all(&mut tmp, &out)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path)?;
        Ok(())
    }
}
