//! Reading the files the scan finds: hashed, copied into the store's
//! staging area, checked not to have changed meanwhile.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::stat;
use super::{changed, err, Content, LinkedContent, WalkError, WalkOptions};
use crate::fsverity;
use crate::objects::{self, DigestSet, Staging};
use crate::statcache::{CachedFile, FileStamp};
use crate::tree::DEFAULT_INLINE_THRESHOLD;

/// What the threads of one walk share: files are read as they are
/// scanned, so the reading overlaps the scan and no list of files to read
/// is kept.
pub(super) struct Reader<'a, 's> {
    pub(super) options: &'a WalkOptions<'a, 's>,
    pub(super) staging: Option<&'a Staging<'s>>,
    /// Digests in the store, listed once (with a stat cache).
    pub(super) present: Option<&'a DigestSet>,
    /// (device, inode) of the staging area's directory and the next stat
    /// cache's file, left out of the tree: a tree that holds the
    /// repository would otherwise take in what this commit writes.
    pub(super) skip: Vec<(u64, u64)>,
    /// Contents of files with more than one link, by (device, inode):
    /// read through the first link scanned, `None` until it is read.
    pub(super) linked: Mutex<HashMap<(u64, u64), Option<LinkedContent>>>,
    pub(super) files_hashed: AtomicU64,
    pub(super) bytes_hashed: AtomicU64,
    pub(super) files_cached: AtomicU64,
}

/// Files up to this size are read whole into memory when stored: hashed
/// and copied from one read.
const READ_WHOLE: u64 = 1 << 20;

thread_local! {
    static WHOLE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A regular file found by the scan, to be read.
pub(super) struct SourceFile<'f> {
    /// Its directory, open.
    pub(super) dir: &'f File,
    pub(super) name: &'f OsStr,
    /// Its path, for errors.
    pub(super) path: &'f Path,
    /// Its size and times when scanned.
    pub(super) stamp: FileStamp,
    /// Others may not read it: its object is private too.
    pub(super) private: bool,
    /// The file itself, if the scan took its metadata from it open.
    pub(super) opened: Option<File>,
    /// What the stat cache holds for its stamp (looked up only for files
    /// too large to inline).
    pub(super) cached: Option<CachedFile>,
    /// Whether the scan found xattrs on it.
    pub(super) has_xattrs: bool,
}

impl Reader<'_, '_> {
    /// Whether the file `key` with more than one link is this caller's
    /// to read: only its first link scanned is read.
    pub(super) fn claim(&self, key: (u64, u64)) -> bool {
        let mut linked = self.lock_linked();
        match linked.contains_key(&key) {
            true => false,
            false => linked.insert(key, None).is_none(),
        }
    }

    pub(super) fn lock_linked(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(u64, u64), Option<LinkedContent>>> {
        self.linked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hash one file (and copy it into the store), checking it did not
    /// change while it was read. Small files also keep their content for
    /// inlining.
    pub(super) fn read(&self, f: SourceFile) -> Result<Content, WalkError> {
        let size = f.stamp.size;
        if let Some(bar) = self.options.progress {
            bar.inc_length(size);
        }
        let (stamp, has_xattrs) = (f.stamp, f.has_xattrs);
        let (content, cached) = self.read_content(f)?;
        // Only files too large to inline are looked up in the stat cache.
        if let Some(stamps) = self
            .options
            .stamps
            .filter(|_| size > DEFAULT_INLINE_THRESHOLD)
        {
            if let Ok(mut stamps) = stamps.lock() {
                let digest = content.0;
                stamps.add(&stamp, &CachedFile { digest, has_xattrs });
            }
        }
        if cached {
            self.files_cached.fetch_add(1, Ordering::Relaxed);
        } else {
            self.files_hashed.fetch_add(1, Ordering::Relaxed);
            self.bytes_hashed.fetch_add(size, Ordering::Relaxed);
        }
        if let Some(bar) = self.options.progress {
            bar.inc(size);
        }
        Ok(content)
    }

    /// [`Reader::read`]; whether the stat cache supplied the digest.
    fn read_content(&self, f: SourceFile) -> Result<(Content, bool), WalkError> {
        let (path, size) = (f.path, f.stamp.size);
        let options = self.options;
        let staging = self.staging;
        // Only files too large to inline are looked up (see the scan).
        if let Some(CachedFile { digest, .. }) = f.cached {
            let stored = match (self.present, options.store) {
                (Some(set), _) => set.contains(&digest),
                (None, Some(store)) => store.contains(&digest),
                (None, None) => true,
            };
            if stored {
                return Ok(((digest, None), true));
            }
        }
        // The very file scanned, not whatever its name leads to now: a link
        // or another file renamed over it since the scan would be read with
        // the mode and privacy of the one scanned.
        let mut file = match f.opened {
            Some(file) => file,
            None => {
                let (file, opened) = match objects::open_regular_in(f.dir, f.name) {
                    Ok(opened) => opened,
                    Err(e) if e.kind() == io::ErrorKind::Other => return Err(changed(path)),
                    Err(e) => return Err(err(path, "cannot open")(e)),
                };
                if (opened.dev(), opened.ino()) != (f.stamp.dev, f.stamp.ino) {
                    return Err(changed(path));
                }
                file
            }
        };
        // A file that grew or shrank while it was read is caught by the size
        // checked after reading, below.
        let (digest, content) = if size <= DEFAULT_INLINE_THRESHOLD {
            let mut data = vec![0; size as usize];
            read_exactly(&mut file, &mut data, path)?;
            (fsverity::digest_bytes(&data), Some(data))
        } else if size <= READ_WHOLE && staging.is_some() {
            // Read once, hashed and copied from memory.
            let digest = WHOLE.with_borrow_mut(|data| {
                data.resize(size as usize, 0);
                read_exactly(&mut file, data, path)?;
                let digest = fsverity::digest_bytes(data);
                staging
                    .expect("checked")
                    .add_bytes(data, &digest, f.private)
                    .map_err(err(path, "cannot store"))?;
                Ok(digest)
            })?;
            (digest, None)
        } else if let Some(staging) = staging.filter(|s| s.store_was_empty()) {
            // Nothing to find in the store: copied as it is hashed, one read.
            // One byte more than scanned shows a file that grew, and bounds
            // what a file growing without end can make it write.
            let (digest, len) = staging
                .add_reader(&mut (&mut file).take(size + 1), f.private)
                .map_err(err(path, "cannot store"))?;
            if len != size {
                return Err(changed(path));
            }
            (digest, None)
        } else {
            let (digest, len) =
                fsverity::digest_reader(&mut file).map_err(err(path, "cannot read"))?;
            if len != size {
                return Err(changed(path));
            }
            if let Some(staging) = staging {
                staging
                    .add_copy(&mut file, &digest, f.private)
                    .map_err(|e| match e.kind() {
                        // Its copy does not hash to what was read before.
                        io::ErrorKind::InvalidData => changed(path),
                        _ => err(path, "cannot store")(e),
                    })?;
            }
            (digest, None)
        };
        let after = stat::stat_of(&file).map_err(err(path, "cannot stat"))?;
        // ctime too: an owner can set the mtime back after rewriting a
        // file in place; nobody can set the ctime.
        if after.size != size || after.mtime != f.stamp.mtime || after.ctime != f.stamp.ctime {
            return Err(changed(path));
        }
        Ok(((digest, content), false))
    }
}

/// Fill `buf` from `file`; a file shorter than that changed since its scan.
fn read_exactly(file: &mut File, buf: &mut [u8], path: &Path) -> Result<(), WalkError> {
    file.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => changed(path),
        _ => err(path, "cannot read")(e),
    })
}
