//! Reading a directory on disk into a [`Tree`]: metadata and xattrs in one
//! pass, then every regular file hashed (and optionally copied into an
//! object store) on a pool of threads, streaming, so any file size works.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
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

/// A regular file whose content is still to be read.
struct Pending {
    inode: InodeId,
    /// Its directory, by position in [`SourceDirs`], and its name: a
    /// million paths spelled out would take more than the tree.
    dir: u32,
    name: Name,
    /// Others may not read it: its object is private too.
    private: bool,
    /// Its size and times when scanned.
    stamp: FileStamp,
}

impl Pending {
    fn size(&self) -> u64 {
        self.stamp.size
    }
}

/// The directories of one walk, by position.
struct SourceDirs {
    /// Which walk of this process they are.
    walk: u64,
    paths: Vec<Box<Path>>,
}

/// Walks begun, to tell one walk's [`SourceDirs`] from another's.
static WALKS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The directory this thread last read a file in, by walk and
    /// position. Files of a directory come together, so most are opened
    /// relative to it, without walking their whole path again.
    static OPEN_DIR: RefCell<Option<(u64, u32, File)>> = const { RefCell::new(None) };
}

impl SourceDirs {
    fn new() -> SourceDirs {
        SourceDirs {
            walk: WALKS.fetch_add(1, Ordering::Relaxed),
            paths: Vec::new(),
        }
    }

    /// Add the directory `path`; its position.
    fn push(&mut self, path: &Path) -> u32 {
        self.paths.push(path.into());
        (self.paths.len() - 1) as u32
    }

    fn path(&self, p: &Pending) -> PathBuf {
        self.paths[p.dir as usize].join(OsStr::from_bytes(&p.name))
    }

    /// Open `p` as [`objects::open_regular_with_metadata`] would by its
    /// path.
    fn open(&self, p: &Pending) -> io::Result<(File, Metadata)> {
        OPEN_DIR.with_borrow_mut(|open| {
            let dir = match open {
                Some((walk, dir, file)) if *walk == self.walk && *dir == p.dir => file,
                _ => {
                    *open = None;
                    let file = objects::open_dir(&self.paths[p.dir as usize])?;
                    &open.insert((self.walk, p.dir, file)).2
                }
            };
            objects::open_regular_in(dir, OsStr::from_bytes(&p.name))
        })
    }
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
    let root_inode = inode_from(root, &meta, options)?;
    let scanned = scan_dir(root, options)?;
    let mut builder = Builder {
        tree: Tree::new(root_inode),
        pending: Vec::new(),
        dirs: SourceDirs::new(),
        links: HashMap::new(),
    };
    builder.dir(crate::tree::ROOT, root, scanned);
    let Builder {
        mut tree,
        pending,
        dirs,
        ..
    } = builder;
    tree.canonicalize_hardlinks();

    let staging = match options.store {
        Some(store) => Some(
            store
                .staging()
                .map_err(err(store.root(), "cannot create a staging directory"))?,
        ),
        None => None,
    };
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
    if let Some(bar) = options.progress {
        bar.set_length(pending.iter().flatten().map(|p| p.size()).sum());
    }
    let mut stats = WalkStats::default();
    // Batch by batch, each dropped once read: the results of a million
    // files are never held at once, nor their entries once read.
    for batch in pending {
        let results = batch
            .par_iter()
            .map(|p| {
                let done = read_content(p, &dirs, staging.as_ref(), options, present.as_ref());
                if let Some(bar) = options.progress {
                    bar.inc(p.size());
                }
                done
            })
            .collect::<Result<Vec<_>, WalkError>>()?;
        for (p, (digest, content, cached)) in batch.iter().zip(results) {
            let inode = &mut tree.inodes[p.inode];
            inode.digest = Some(digest);
            inode.payload = Some(object_path(&digest).into_bytes().into());
            inode.content = content.map(Into::into);
            if cached {
                stats.files_cached += 1;
            } else {
                stats.files_hashed += 1;
                stats.bytes_hashed += p.size();
            }
            // Only files too large to inline are looked up in the stat cache.
            if let Some(stamps) = options
                .stamps
                .filter(|_| p.size() > DEFAULT_INLINE_THRESHOLD)
            {
                if let Ok(mut stamps) = stamps.lock() {
                    stamps.add(&p.stamp, &digest);
                }
            }
        }
    }
    Ok((tree, stats, staging))
}

/// One directory entry as scanned, before hard links are resolved. Only
/// what the tree needs is kept: a million of these are held at once.
struct Scanned {
    name: Name,
    stamp: FileStamp,
    nlink: u64,
    inode: Inode,
    children: Vec<Scanned>,
}

/// Stat every entry under `path`, sorted by name; subdirectories are
/// scanned in parallel (the stat and xattr calls dominate an unchanged tree).
fn scan_dir(path: &Path, options: &WalkOptions) -> Result<Vec<Scanned>, WalkError> {
    let mut entries: Vec<_> = fs::read_dir(path)
        .map_err(err(path, "cannot list directory"))?
        .collect::<Result<_, _>>()
        .map_err(err(path, "cannot list directory"))?;
    entries.sort_unstable_by_key(|e| e.file_name());
    entries
        .into_par_iter()
        .map(|entry| {
            let name = entry.file_name();
            let child = path.join(&name);
            // Relative to the open directory: no path lookup per file.
            let meta = entry.metadata().map_err(err(&child, "cannot stat"))?;
            let inode = inode_from(&child, &meta, options)?;
            let children = if meta.is_dir() {
                scan_dir(&child, options)?
            } else {
                Vec::new()
            };
            Ok(Scanned {
                name: Name::from_slice(name.as_bytes()),
                stamp: FileStamp::of(&meta),
                nlink: meta.nlink(),
                inode,
                children,
            })
        })
        .collect()
}

/// Builds the tree from scanned entries in name order, so hard links
/// resolve the same way on every run.
struct Builder {
    tree: Tree,
    /// Files to read, in batches of [`BATCH`].
    pending: Vec<Vec<Pending>>,
    /// The directories read.
    dirs: SourceDirs,
    /// (device, inode) of multiply-linked files already seen.
    links: HashMap<(u64, u64), InodeId>,
}

/// Files read in parallel between two updates of the tree.
const BATCH: usize = 16 * 1024;

impl Builder {
    fn add_pending(&mut self, p: Pending) {
        match self.pending.last_mut() {
            Some(batch) if batch.len() < BATCH => batch.push(p),
            _ => {
                let mut batch = Vec::with_capacity(BATCH);
                batch.push(p);
                self.pending.push(batch);
            }
        }
    }

    fn dir(&mut self, dir: InodeId, dir_path: &Path, entries: Vec<Scanned>) {
        let dir_index = self.dirs.push(dir_path);
        // Names come sorted: a B-tree built from a sorted list has full
        // nodes, where one filled in order has them about half full.
        let mut names = Vec::with_capacity(entries.len());
        for entry in entries {
            let Scanned {
                name,
                stamp,
                nlink,
                mut inode,
                children,
            } = entry;
            let key = (stamp.dev, stamp.ino);
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
            let regular_size = (inode.file_type() == Some(FileType::Regular)).then_some(inode.size);
            let private = crate::objects::is_private(inode.mode);
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
            match regular_size {
                Some(size) if size > 0 => self.add_pending(Pending {
                    inode: id,
                    dir: dir_index,
                    name: name.clone(),
                    private,
                    stamp,
                }),
                _ => {}
            }
            if is_dir {
                self.dir(id, &dir_path.join(OsStr::from_bytes(&name)), children);
            }
        }
        self.tree.inodes[dir].entries = names.into_iter().collect();
    }
}

/// The inode of `path` from its metadata (no content yet).
fn inode_from(path: &Path, meta: &Metadata, options: &WalkOptions) -> Result<Inode, WalkError> {
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
        for name in xattr::list(path).map_err(err(path, "cannot list xattrs"))? {
            // An xattr removed between list and get is simply gone.
            if let Some(value) = xattr::get(path, &name).map_err(err(path, "cannot read xattr"))? {
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

/// Hash one file (and copy it into the store), checking it did not change
/// while it was read. Small files also keep their content for inlining.
/// Files up to this size are read whole into memory when stored: hashed
/// and copied from one read.
const READ_WHOLE: u64 = 1 << 20;

thread_local! {
    static WHOLE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Returns the digest, the inline content and whether the cache supplied it.
fn read_content(
    p: &Pending,
    dirs: &SourceDirs,
    staging: Option<&Staging>,
    options: &WalkOptions,
    present: Option<&DigestSet>,
) -> Result<(Digest, Option<Vec<u8>>, bool), WalkError> {
    let path = &dirs.path(p);
    if p.size() > DEFAULT_INLINE_THRESHOLD {
        if let Some(digest) = options.cache.and_then(|c| c.get(&p.stamp)) {
            let stored = match (present, options.store) {
                (Some(set), _) => set.contains(&digest),
                (None, Some(store)) => store.contains(&digest),
                (None, None) => true,
            };
            if stored {
                return Ok((digest, None, true));
            }
        }
    }
    // The very file scanned, not whatever its name leads to now: a link
    // or another file renamed over it since the scan would be read with
    // the mode and privacy of the one scanned.
    let (mut file, opened) = match dirs.open(p) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::Other => return Err(changed(path)),
        Err(e) => return Err(err(path, "cannot open")(e)),
    };
    if (opened.dev(), opened.ino()) != (p.stamp.dev, p.stamp.ino) {
        return Err(changed(path));
    }
    // A file that grew or shrank while it was read is caught by the size
    // checked after reading, below.
    let (digest, content) = if p.size() <= DEFAULT_INLINE_THRESHOLD {
        let mut data = vec![0; p.size() as usize];
        read_exactly(&mut file, &mut data, path)?;
        (fsverity::digest_bytes(&data), Some(data))
    } else if p.size() <= READ_WHOLE && staging.is_some() {
        // Read once, hashed and copied from memory.
        let digest = WHOLE.with_borrow_mut(|data| {
            data.resize(p.size() as usize, 0);
            read_exactly(&mut file, data, path)?;
            let digest = fsverity::digest_bytes(data);
            staging
                .expect("checked")
                .add_bytes(data, &digest, p.private)
                .map_err(err(path, "cannot store"))?;
            Ok(digest)
        })?;
        (digest, None)
    } else if let Some(staging) = staging.filter(|s| s.store_was_empty()) {
        // Nothing to find in the store: copied as it is hashed, one read.
        // One byte more than scanned shows a file that grew, and bounds
        // what a file growing without end can make it write.
        let (digest, len) = staging
            .add_reader(&mut (&mut file).take(p.size() + 1), p.private)
            .map_err(err(path, "cannot store"))?;
        if len != p.size() {
            return Err(changed(path));
        }
        (digest, None)
    } else {
        let (digest, len) = fsverity::digest_reader(&mut file).map_err(err(path, "cannot read"))?;
        if len != p.size() {
            return Err(changed(path));
        }
        if let Some(staging) = staging {
            staging
                .add_copy(&mut file, &digest, p.private)
                .map_err(|e| match e.kind() {
                    // Its copy does not hash to what was read before.
                    io::ErrorKind::InvalidData => changed(path),
                    _ => err(path, "cannot store")(e),
                })?;
        }
        (digest, None)
    };
    let after = file.metadata().map_err(err(path, "cannot stat"))?;
    if after.size() != p.size()
        || after.mtime() != p.stamp.mtime.0
        || after.mtime_nsec() != p.stamp.mtime.1
    {
        return Err(changed(path));
    }
    Ok((digest, content, false))
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
