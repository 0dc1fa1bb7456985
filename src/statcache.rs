//! The stat cache: for each file a commit hashed, its identity and change
//! stamps (device, inode, size, mtime, ctime), its digest and whether it
//! had xattrs, so a later commit of an unchanged tree trusts the digest
//! instead of re-reading, and asks a file that had none for nothing more
//! than its stamp.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fsverity::Digest;

const MAGIC: &[u8; 8] = b"STCACHE2";
/// The magic, then the user who wrote the cache (8 bytes).
const HEADER: usize = MAGIC.len() + 8;
const RECORD: usize = 8 * 8 + 32;
/// In a record's flags: the file had xattrs.
const HAS_XATTRS: u64 = 1;

/// What identifies a file's content without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

/// What a commit found of a file with a given stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedFile {
    pub digest: Digest,
    /// Setting or removing one changes the ctime, so a file whose stamp
    /// is unchanged and that had none still has none.
    pub has_xattrs: bool,
}

/// Files by stamp.
#[derive(Default)]
pub struct StatCache {
    /// Sorted by device and inode: a sorted list takes half the memory of
    /// a hash map, which matters at a million files.
    entries: Vec<Entry>,
}

/// One file as held: nanoseconds in 32 bits, which keeps an entry with
/// its flag as small (88 bytes) as a [`FileStamp`] and a digest alone.
struct Entry {
    dev: u64,
    ino: u64,
    size: u64,
    secs: (i64, i64),
    nsecs: (u32, u32),
    file: CachedFile,
}

impl Entry {
    fn new(s: &FileStamp, file: CachedFile) -> Option<Entry> {
        let nsec = |t: i64| u32::try_from(t).ok().filter(|&n| n < 1_000_000_000);
        Some(Entry {
            dev: s.dev,
            ino: s.ino,
            size: s.size,
            secs: (s.mtime.0, s.ctime.0),
            nsecs: (nsec(s.mtime.1)?, nsec(s.ctime.1)?),
            file,
        })
    }

    fn stamp(&self) -> FileStamp {
        FileStamp {
            dev: self.dev,
            ino: self.ino,
            size: self.size,
            mtime: (self.secs.0, self.nsecs.0.into()),
            ctime: (self.secs.1, self.nsecs.1.into()),
        }
    }
}

impl StatCache {
    /// Load the cache; a missing or unreadable cache is an empty one.
    pub fn load(path: &Path) -> StatCache {
        let Ok(bytes) = fs::read(path) else {
            return StatCache::default();
        };
        let whole = bytes.len() >= HEADER && (bytes.len() - HEADER) % RECORD == 0;
        if !(bytes.starts_with(MAGIC) && whole) {
            return StatCache::default();
        }
        let (writer, body) = bytes[MAGIC.len()..].split_at(8);
        // Which xattrs a listing shows depends on who lists (trusted.*
        // only to an administrator): another user's "none" vouches for
        // nothing here, though its digests hold.
        let same_lister = writer == current_user().to_le_bytes();
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
            // A flag no writer sets: a damaged cache, taken as none.
            if n(7) & !HAS_XATTRS != 0 {
                return StatCache::default();
            }
            let file = CachedFile {
                digest: rec[64..].try_into().unwrap(),
                has_xattrs: n(7) & HAS_XATTRS != 0 || !same_lister,
            };
            // One no stat gives (a damaged cache) stands for no file.
            entries.extend(Entry::new(&stamp, file));
        }
        entries.sort_unstable_by_key(|e| (e.dev, e.ino));
        StatCache { entries }
    }

    /// Whether it holds no stamp (a first commit, or a cache lost).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What was found of a file whose stamp is unchanged.
    pub fn get(&self, stamp: &FileStamp) -> Option<CachedFile> {
        let at = self
            .entries
            .binary_search_by_key(&(stamp.dev, stamp.ino), |e| (e.dev, e.ino))
            .ok()?;
        let entry = &self.entries[at];
        (entry.stamp() == *stamp).then_some(entry.file)
    }
}

/// The user this process acts as.
fn current_user() -> u64 {
    nix::unistd::geteuid().as_raw().into()
}

/// The next stat cache, written as files are hashed: a million stamps are
/// never held at once. Only a hint for a later commit, so a write that
/// fails is remembered and reported by [`Writer::persist`], not at once.
pub struct Writer {
    path: PathBuf,
    /// Made on the first record or by [`Writer::file_id`], for a walk
    /// to leave it out: a commit of a tree holding the repository never
    /// takes it in.
    out: Option<io::BufWriter<tempfile::NamedTempFile>>,
    started: i128,
    error: Option<io::Error>,
}

impl Writer {
    /// A new cache to replace `path`. Files changed within a second of
    /// `started` (nanoseconds since the epoch, taken before they were
    /// read) are left out: a write in the same timestamp tick could leave
    /// their stamps unchanged.
    pub fn new(path: &Path, started: i128) -> Writer {
        Writer {
            path: path.to_path_buf(),
            out: None,
            started,
            error: None,
        }
    }

    /// The temporary file beside `path`, named as a temporary: one a
    /// killed commit leaves is removed when the next writer takes the lock.
    fn out(&mut self) -> io::Result<&mut io::BufWriter<tempfile::NamedTempFile>> {
        if self.out.is_none() {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            let tmp = tempfile::Builder::new()
                .prefix(crate::lockfile::TEMP_PREFIX)
                .tempfile_in(dir)?;
            let mut out = io::BufWriter::with_capacity(1 << 16, tmp);
            out.write_all(MAGIC)?;
            out.write_all(&current_user().to_le_bytes())?;
            self.out = Some(out);
        }
        Ok(self.out.as_mut().expect("made above"))
    }

    /// Make the cache's temporary file now; its device and inode, for a
    /// walk to leave it out. `None` if it cannot be made (the error is
    /// kept for [`Writer::persist`]).
    pub fn file_id(&mut self) -> Option<(u64, u64)> {
        if self.error.is_some() {
            return None;
        }
        match self
            .out()
            .and_then(|out| out.get_ref().as_file().metadata())
        {
            Ok(meta) => Some((meta.dev(), meta.ino())),
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }

    /// Record what was found of the file with `stamp`.
    pub fn add(&mut self, s: &FileStamp, file: &CachedFile) {
        let ns = |t: (i64, i64)| t.0 as i128 * 1_000_000_000 + t.1 as i128;
        let recent = self.started - 1_000_000_000;
        if self.error.is_some() || ns(s.ctime) >= recent || ns(s.mtime) >= recent {
            return;
        }
        let mut rec = [0u8; RECORD];
        let fields = [
            s.dev,
            s.ino,
            s.size,
            s.mtime.0 as u64,
            s.mtime.1 as u64,
            s.ctime.0 as u64,
            s.ctime.1 as u64,
            if file.has_xattrs { HAS_XATTRS } else { 0 },
        ];
        for (slot, v) in rec.chunks_exact_mut(8).zip(fields) {
            slot.copy_from_slice(&v.to_le_bytes());
        }
        rec[64..].copy_from_slice(&file.digest);
        if let Err(e) = self.out().and_then(|out| out.write_all(&rec)) {
            self.error = Some(e);
        }
    }

    /// Make the cache the one at the path given, atomically.
    pub fn persist(mut self) -> io::Result<()> {
        self.out()?;
        if let Some(e) = self.error {
            return Err(e);
        }
        let out = self.out.expect("made above");
        let tmp = out.into_inner().map_err(|e| e.into_error())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_no_larger_for_its_xattr_flag() {
        assert_eq!(std::mem::size_of::<Entry>(), 88);
    }

    /// Stamps and flags come back as written; a stamp differing in any
    /// part finds nothing.
    #[test]
    fn a_cache_gives_back_what_was_written_for_the_same_stamp_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("statcache");
        let stamp = |ino: u64| FileStamp {
            dev: 7,
            ino,
            size: 100 + ino,
            mtime: (1_600_000_000, 999_999_999),
            ctime: (1_600_000_001, 5),
        };
        let file = |i: u8| CachedFile {
            digest: [i; 32],
            has_xattrs: i % 2 == 1,
        };
        let mut writer = Writer::new(&path, 1_700_000_000 * 1_000_000_000);
        for i in 0..4u8 {
            writer.add(&stamp(u64::from(i)), &file(i));
        }
        writer.persist().unwrap();
        let cache = StatCache::load(&path);
        for i in 0..4u8 {
            assert_eq!(cache.get(&stamp(u64::from(i))), Some(file(i)));
        }
        let changed = [
            FileStamp {
                size: 1,
                ..stamp(1)
            },
            FileStamp {
                mtime: (1_600_000_000, 0),
                ..stamp(1)
            },
            FileStamp {
                ctime: (1_600_000_001, 6),
                ..stamp(1)
            },
            FileStamp { dev: 8, ..stamp(1) },
            stamp(9),
        ];
        for s in changed {
            assert_eq!(cache.get(&s), None, "{s:?}");
        }
        // A flag no writer sets: the cache is damaged, and none of it is
        // trusted, not even the records before.
        let bytes = fs::read(&path).unwrap();
        let mut damaged = bytes.clone();
        damaged[HEADER + 3 * RECORD + 7 * 8] |= 2;
        fs::write(&path, damaged).unwrap();
        assert!(StatCache::load(&path).is_empty());
        // Written by another user: the digests hold, "no xattrs" does not.
        let mut other = bytes;
        other[MAGIC.len()..HEADER].copy_from_slice(&(current_user() + 1).to_le_bytes());
        fs::write(&path, other).unwrap();
        let cache = StatCache::load(&path);
        for i in 0..4u8 {
            let got = cache.get(&stamp(u64::from(i))).unwrap();
            assert_eq!((got.digest, got.has_xattrs), (file(i).digest, true));
        }
    }
}
