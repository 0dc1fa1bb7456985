//! Reading a directory on disk into a [`Tree`]: metadata and xattrs in one
//! pass, then every regular file hashed (and optionally copied into an
//! object store) on a pool of threads, streaming, so any file size works.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::fsverity::{self, Digest};
use crate::objects::{self, CommitStats, DigestSet, ObjectStore, Staging};
use crate::statcache::{self, FileStamp, StatCache};
use crate::tree::{
    object_path, DirEntry, FileType, Inode, InodeId, Mtime, Name, Tree, DEFAULT_INLINE_THRESHOLD,
};
use xattr::FileExt as _;

/// A path that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {what}", path.as_os_str().as_bytes().escape_ascii())]
pub struct WalkError {
    pub path: PathBuf,
    pub what: &'static str,
    #[source]
    pub source: io::Error,
}

fn err<'p>(path: &'p Path, what: &'static str) -> impl FnOnce(io::Error) -> WalkError + 'p {
    move |source| WalkError {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// How to read a directory. The store has a lifetime of its own, `'s`:
/// the staging area [`read_dir_tree_staged`] returns borrows only it.
#[derive(Default)]
pub struct WalkOptions<'a, 's> {
    /// Digests of files whose stamps are unchanged since they were hashed.
    pub cache: Option<&'a StatCache>,
    /// Threads for hashing and copying (0: one per core).
    pub threads: usize,
    /// Copy external file contents into this store.
    pub store: Option<&'s ObjectStore>,
    /// Leave out extended attributes (faster when they are not wanted).
    pub skip_xattrs: bool,
    /// Advanced by the bytes of each file read (hidden unless on a terminal).
    pub progress: Option<&'a indicatif::ProgressBar>,
    /// Given the stamp and digest of every file too large to inline, for
    /// the next stat cache.
    pub stamps: Option<&'a Mutex<statcache::Writer>>,
}

/// What reading a directory found.
#[derive(Debug, Default)]
pub struct WalkStats {
    pub files_hashed: u64,
    pub bytes_hashed: u64,
    /// Files whose digest came from the stat cache, unread.
    pub files_cached: u64,
    pub store: CommitStats,
}

/// A file's digest and, if it is small enough to inline, its content.
type Content = (Digest, Option<Vec<u8>>);

/// The content of a file with several links, and its inode as scanned
/// through the link it was read by: the tree takes the inode of another
/// link, which must match, or the file changed between the two.
type LinkedContent = (Content, Inode);

/// What the threads of one walk share: files are read as they are
/// scanned, so the reading overlaps the scan and no list of files to read
/// is kept.
struct Reader<'a, 's> {
    options: &'a WalkOptions<'a, 's>,
    staging: Option<&'a Staging<'s>>,
    /// Digests in the store, listed once (with a stat cache).
    present: Option<&'a DigestSet>,
    /// (device, inode) of the staging area's directory and the next stat
    /// cache's file, left out of the tree: a tree that holds the
    /// repository would otherwise take in what this commit writes.
    skip: Vec<(u64, u64)>,
    /// Contents of files with more than one link, by (device, inode):
    /// read through the first link scanned, `None` until it is read.
    linked: Mutex<HashMap<(u64, u64), Option<LinkedContent>>>,
    files_hashed: AtomicU64,
    bytes_hashed: AtomicU64,
    files_cached: AtomicU64,
}

/// Read the tree under `root`; contents copied into the store are
/// published in it.
pub fn read_dir_tree(root: &Path, options: &WalkOptions) -> Result<(Tree, WalkStats), WalkError> {
    let (tree, mut stats, staging) = read_dir_tree_staged(root, options)?;
    if let (Some(staging), Some(store)) = (staging, options.store) {
        stats.store = staging
            .commit()
            .map_err(err(store.root(), "cannot publish objects"))?;
    }
    Ok((tree, stats))
}

/// [`read_dir_tree`], with the contents copied into the store left staged:
/// the caller publishes them ([`Staging::commit`]) before anything that
/// names them is kept, and may do other work meanwhile.
pub fn read_dir_tree_staged<'s>(
    root: &Path,
    options: &WalkOptions<'_, 's>,
) -> Result<(Tree, WalkStats, Option<Staging<'s>>), WalkError> {
    // Scanning recurses once per directory level; paths of PATH_MAX
    // bytes can nest 2048 levels, more than a default thread stack holds.
    rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads)
        .stack_size(64 << 20)
        .build()
        .map_err(|e| err(root, "cannot start threads")(io::Error::other(e)))?
        .install(|| read_dir_tree_here(root, options))
}

/// [`read_dir_tree_staged`] on the current rayon pool.
fn read_dir_tree_here<'s>(
    root: &Path,
    options: &WalkOptions<'_, 's>,
) -> Result<(Tree, WalkStats, Option<Staging<'s>>), WalkError> {
    let meta = fs::metadata(root).map_err(err(root, "cannot read"))?;
    if !meta.is_dir() {
        return Err(err(root, "not a directory")(io::Error::from(
            io::ErrorKind::NotADirectory,
        )));
    }
    let root_inode = inode_from(root, &meta, None, options)?;

    let mut skip = Vec::new();
    let staging = match options.store {
        Some(store) => {
            let staging = store
                .staging()
                .map_err(err(store.root(), "cannot create a staging directory"))?;
            skip.push(
                staging
                    .dir_id()
                    .map_err(err(store.root(), "cannot read the staging directory"))?,
            );
            Some(staging)
        }
        None => None,
    };
    // Made now, before the scan, to be left out of it; only a hint, so
    // one that cannot be made is reported when it is persisted.
    if let Some(id) = options.stamps.and_then(|s| s.lock().ok()?.file_id()) {
        skip.push(id);
    }
    // With a stat cache, most files are only checked against the store:
    // one listing is cheaper than a lookup per file.
    let present = match (options.cache, options.store) {
        (Some(_), Some(store)) => Some(
            store
                .digests()
                .map_err(err(store.root(), "cannot list objects"))?,
        ),
        _ => None,
    };
    let reader = Reader {
        options,
        staging: staging.as_ref(),
        present: present.as_ref(),
        skip,
        linked: Mutex::new(HashMap::new()),
        files_hashed: AtomicU64::new(0),
        bytes_hashed: AtomicU64::new(0),
        files_cached: AtomicU64::new(0),
    };
    let scanned = scan_dir(root, meta.dev(), &reader)?;
    let Reader {
        linked,
        files_hashed,
        bytes_hashed,
        files_cached,
        ..
    } = reader;
    // Every file is read: the store's listing is not kept while the tree
    // is built.
    drop(present);
    let mut builder = Builder {
        tree: Tree::new(root_inode),
        linked: linked.into_inner().unwrap_or_else(|e| e.into_inner()),
        links: HashMap::new(),
    };
    builder.dir(crate::tree::ROOT, root, scanned)?;
    let mut tree = builder.tree;
    tree.canonicalize_hardlinks();
    let stats = WalkStats {
        files_hashed: files_hashed.into_inner(),
        bytes_hashed: bytes_hashed.into_inner(),
        files_cached: files_cached.into_inner(),
        store: CommitStats::default(),
    };
    Ok((tree, stats, staging))
}

/// One directory entry as scanned, before hard links are resolved. Only
/// what the tree needs is kept: a million of these are held at once.
struct Scanned {
    name: Name,
    /// Its device and inode number, for hard links.
    key: (u64, u64),
    /// With its link count as scanned, and its digest and content if it
    /// is a file read through this name.
    inode: Inode,
    children: Vec<Scanned>,
}

/// Stat every entry under `path`, sorted by name, and read the files;
/// subdirectories are scanned in parallel (the stat and xattr calls
/// dominate an unchanged tree).
/// `dev` is the device of the directory at `path`.
fn scan_dir(path: &Path, dev: u64, reader: &Reader) -> Result<Vec<Scanned>, WalkError> {
    let mut entries: Vec<_> = fs::read_dir(path)
        .map_err(err(path, "cannot list directory"))?
        .collect::<Result<_, _>>()
        .map_err(err(path, "cannot list directory"))?;
    // The staging directory is never a mount point: its entry's inode is
    // its own.
    if reader.skip.iter().any(|&(skip_dev, _)| skip_dev == dev) {
        entries.retain(|e| !reader.skip.contains(&(dev, e.ino())));
    }
    entries.sort_unstable_by_key(|e| e.file_name());
    // Files are opened relative to their directory, opened once, not by
    // a path walked again for each.
    let has_files = entries
        .iter()
        .any(|e| e.file_type().is_ok_and(|t| t.is_file()));
    let dir = match has_files {
        true => Some(objects::open_dir(path).map_err(err(path, "cannot open"))?),
        false => None,
    };
    // With no stat cache to consult, every file is read: opened first
    // and its metadata taken from the open file, each is looked up by
    // name once, not for a stat, an xattr listing and an open.
    let open_first = reader.options.cache.is_none_or(StatCache::is_empty);
    entries
        .into_par_iter()
        .map(|entry| {
            let name = entry.file_name();
            let child = path.join(&name);
            // Anything that did not open as a regular file (a link or a
            // directory put in its place since the listing, a file we may
            // not read) is stat'ed by name as any other entry.
            let opened = match (&dir, open_first) {
                (Some(dir), true) if entry.file_type().is_ok_and(|t| t.is_file()) => {
                    objects::open_regular_in(dir, &name).ok()
                }
                _ => None,
            };
            let (opened, meta) = match opened {
                Some((file, meta)) => (Some(file), meta),
                // Relative to the open directory: no path lookup per file.
                None => (None, entry.metadata().map_err(err(&child, "cannot stat"))?),
            };
            let key = (meta.dev(), meta.ino());
            let mut inode = inode_from(&child, &meta, opened.as_ref(), reader.options)?;
            let stamp = FileStamp::of(&meta);
            let children = if meta.is_dir() {
                scan_dir(&child, meta.dev(), reader)?
            } else {
                Vec::new()
            };
            if inode.file_type() == Some(FileType::Regular) && inode.size > 0 {
                // Listed as something else, a file now: it changed.
                let dir = dir.as_ref().ok_or_else(|| changed(&child))?;
                let private = crate::objects::is_private(inode.mode);
                let file = SourceFile {
                    dir,
                    name: &name,
                    path: &child,
                    stamp: &stamp,
                    private,
                    opened,
                };
                if meta.nlink() <= 1 {
                    set_content(&mut inode, reader.read(file)?);
                } else if reader.claim(key) {
                    let content = reader.read(file)?;
                    reader
                        .lock_linked()
                        .insert(key, Some((content, inode.clone())));
                }
            }
            inode.nlink = meta.nlink().try_into().unwrap_or(u32::MAX);
            Ok(Scanned {
                name: Name::from_slice(name.as_bytes()),
                key,
                inode,
                children,
            })
        })
        .collect()
}

/// Whether two scans of one file saw the same metadata.
fn same_metadata(a: &Inode, b: &Inode) -> bool {
    (a.mode, a.uid, a.gid, a.size, &a.mtime, &a.xattrs)
        == (b.mode, b.uid, b.gid, b.size, &b.mtime, &b.xattrs)
}

/// Give `inode` the content read for it.
fn set_content(inode: &mut Inode, (digest, content): Content) {
    inode.digest = Some(digest);
    inode.payload = Some(object_path(&digest).into_bytes().into());
    inode.content = content.map(Into::into);
}

/// Builds the tree from scanned entries in name order, so hard links
/// resolve the same way on every run.
struct Builder {
    tree: Tree,
    /// [`Reader::linked`], once every file is read.
    linked: HashMap<(u64, u64), Option<LinkedContent>>,
    /// (device, inode) of multiply-linked files already seen.
    links: HashMap<(u64, u64), InodeId>,
}

impl Builder {
    fn dir(
        &mut self,
        dir: InodeId,
        dir_path: &Path,
        entries: Vec<Scanned>,
    ) -> Result<(), WalkError> {
        // Names come sorted: a B-tree built from a sorted list has full
        // nodes, where one filled in order has them about half full.
        let mut names = Vec::with_capacity(entries.len());
        for entry in entries {
            let Scanned {
                name,
                key,
                mut inode,
                children,
            } = entry;
            let nlink = inode.nlink;
            let is_dir = inode.is_dir();
            if !is_dir && nlink > 1 {
                if let Some(&id) = self.links.get(&key) {
                    self.tree.inodes[id].nlink += 1;
                    names.push((
                        name,
                        DirEntry {
                            inode: id,
                            hardlink: true,
                        },
                    ));
                    continue;
                }
            }
            inode.nlink = 1;
            let read = inode.file_type() == Some(FileType::Regular) && inode.size > 0;
            if read && inode.digest.is_none() {
                // Read through whichever of its links was scanned first:
                // its metadata then must be this link's, or the file
                // changed (its mode, say, or its size) in between.
                let path = || dir_path.join(OsStr::from_bytes(&name));
                let (content, read_as) = self
                    .linked
                    .remove(&key)
                    .flatten()
                    .ok_or_else(|| changed(&path()))?;
                if !same_metadata(&inode, &read_as) {
                    return Err(changed(&path()));
                }
                set_content(&mut inode, content);
            }
            let id = self.tree.add_inode(inode);
            names.push((
                name.clone(),
                DirEntry {
                    inode: id,
                    hardlink: false,
                },
            ));
            if !is_dir && nlink > 1 {
                self.links.insert(key, id);
            }
            if is_dir {
                self.dir(id, &dir_path.join(OsStr::from_bytes(&name)), children)?;
            }
        }
        self.tree.inodes[dir].entries = names.into_iter().collect();
        Ok(())
    }
}

/// The inode of `path` from its metadata (no content yet).
/// `opened` is the file itself, open, if it is: its xattrs are read
/// from it, not by path.
fn inode_from(
    path: &Path,
    meta: &Metadata,
    opened: Option<&File>,
    options: &WalkOptions,
) -> Result<Inode, WalkError> {
    let mut inode = Inode::new(meta.mode());
    inode.uid = meta.uid();
    inode.gid = meta.gid();
    inode.mtime = Mtime {
        sec: meta.mtime(),
        nsec: meta.mtime_nsec() as u32,
    };
    match inode.file_type() {
        Some(FileType::Regular) => inode.size = meta.size(),
        Some(FileType::Symlink) => {
            let target = fs::read_link(path).map_err(err(path, "cannot read symlink"))?;
            let target = target.as_os_str().as_bytes().to_vec();
            inode.size = target.len() as u64;
            inode.payload = Some(target.into());
        }
        Some(FileType::BlockDevice | FileType::CharDevice) => {
            inode.rdev = encode_dev(meta.rdev()).ok_or_else(|| {
                err(path, "device number does not fit the image format")(io::Error::from(
                    io::ErrorKind::InvalidData,
                ))
            })?;
        }
        Some(FileType::Directory) => inode.size = meta.size(),
        _ => {}
    }
    if !options.skip_xattrs {
        let names = match opened {
            Some(file) => file.list_xattr(),
            None => xattr::list(path),
        };
        for name in names.map_err(err(path, "cannot list xattrs"))? {
            let value = match opened {
                Some(file) => file.get_xattr(&name),
                None => xattr::get(path, &name),
            };
            // An xattr removed between list and get is simply gone.
            if let Some(value) = value.map_err(err(path, "cannot read xattr"))? {
                inode.xattrs.insert(name.as_bytes().to_vec(), value);
            }
        }
    }
    Ok(inode)
}

/// The kernel's 32-bit `new_encode_dev` form of a device number.
fn encode_dev(rdev: u64) -> Option<u32> {
    let major = nix::sys::stat::major(rdev);
    let minor = nix::sys::stat::minor(rdev);
    if major >= 1 << 12 || minor >= 1 << 20 {
        return None;
    }
    Some(((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)) as u32)
}

/// Files up to this size are read whole into memory when stored: hashed
/// and copied from one read.
const READ_WHOLE: u64 = 1 << 20;

thread_local! {
    static WHOLE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A regular file found by the scan, to be read.
struct SourceFile<'f> {
    /// Its directory, open.
    dir: &'f File,
    name: &'f OsStr,
    /// Its path, for errors.
    path: &'f Path,
    /// Its size and times when scanned.
    stamp: &'f FileStamp,
    /// Others may not read it: its object is private too.
    private: bool,
    /// The file itself, if the scan took its metadata from it open.
    opened: Option<File>,
}

impl Reader<'_, '_> {
    /// Whether the file `key` with more than one link is this caller's
    /// to read: only its first link scanned is read.
    fn claim(&self, key: (u64, u64)) -> bool {
        let mut linked = self.lock_linked();
        match linked.contains_key(&key) {
            true => false,
            false => linked.insert(key, None).is_none(),
        }
    }

    fn lock_linked(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u64), Option<LinkedContent>>> {
        self.linked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hash one file (and copy it into the store), checking it did not
    /// change while it was read. Small files also keep their content for
    /// inlining.
    fn read(&self, f: SourceFile) -> Result<Content, WalkError> {
        let size = f.stamp.size;
        if let Some(bar) = self.options.progress {
            bar.inc_length(size);
        }
        let stamp = f.stamp;
        let (content, cached) = self.read_content(f)?;
        // Only files too large to inline are looked up in the stat cache.
        if let Some(stamps) = self
            .options
            .stamps
            .filter(|_| size > DEFAULT_INLINE_THRESHOLD)
        {
            if let Ok(mut stamps) = stamps.lock() {
                stamps.add(stamp, &content.0);
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
        if size > DEFAULT_INLINE_THRESHOLD {
            if let Some(digest) = options.cache.and_then(|c| c.get(f.stamp)) {
                let stored = match (self.present, options.store) {
                    (Some(set), _) => set.contains(&digest),
                    (None, Some(store)) => store.contains(&digest),
                    (None, None) => true,
                };
                if stored {
                    return Ok(((digest, None), true));
                }
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
        let after = file.metadata().map_err(err(path, "cannot stat"))?;
        if after.size() != size
            || after.mtime() != f.stamp.mtime.0
            || after.mtime_nsec() != f.stamp.mtime.1
        {
            return Err(changed(path));
        }
        Ok(((digest, content), false))
    }
}

/// Fill `buf` from `file`; a file shorter than that changed since its scan.
fn read_exactly(file: &mut fs::File, buf: &mut [u8], path: &Path) -> Result<(), WalkError> {
    file.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => changed(path),
        _ => err(path, "cannot read")(e),
    })
}

fn changed(path: &Path) -> WalkError {
    err(path, "file changed while it was read")(io::Error::from(io::ErrorKind::InvalidData))
}
