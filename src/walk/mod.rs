//! Reading a directory on disk into a [`Tree`]: every entry scanned in
//! parallel, each regular file hashed (and optionally copied into an
//! object store) as it is found, streaming, so any file size works.

mod build;
mod read;
mod stat;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use nix::dir::Type;
use rayon::prelude::*;

use crate::fsverity::Digest;
use crate::objects::{self, CommitStats, ObjectStore, Staging};
use crate::statcache::{self, StatCache};
use crate::tree::{FileType, Inode, Mtime, Name, Tree, DEFAULT_INLINE_THRESHOLD};
use build::Builder;
use read::{Reader, SourceFile};
use stat::{Listing, Stat};
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
    let dir = stat::open_dir(root, true).map_err(|e| match e.raw_os_error() {
        Some(nix::libc::ENOTDIR) => err(root, "not a directory")(e),
        _ => err(root, "cannot open")(e),
    })?;
    let meta = stat::stat_of(&dir).map_err(err(root, "cannot stat"))?;
    let root_inode = inode_from(root, &meta, Reach::Open(&dir), options, false)?;

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
    let scanned = scan_dir(root, dir, &reader)?;
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

/// Scan the directory `dir`, open, at `path`: every entry stat'ed, sorted
/// by name, and the files read, in parallel. Its subdirectories are
/// scanned after it is closed, so that a deep tree does not hold a
/// directory open per level.
fn scan_dir(path: &Path, dir: File, reader: &Reader) -> Result<Vec<Scanned>, WalkError> {
    let mut listing = Listing::read(&dir).map_err(err(path, "cannot list directory"))?;
    listing.sort();
    let found: Vec<Option<Scanned>> = listing
        .entries()
        .map(|(name, kind)| reader.scan_entry(&dir, path, name, kind))
        .collect::<Result<_, _>>()?;
    drop((dir, listing));
    // Collected in place, in the same allocation (`flatten` would make a
    // new one): a million entries are held.
    #[allow(clippy::filter_map_identity)]
    let mut scanned: Vec<Scanned> = found.into_iter().filter_map(|entry| entry).collect();
    scanned
        .par_iter_mut()
        .filter(|entry| entry.inode.is_dir())
        .try_for_each(|entry| reader.scan_subdir(path, entry))?;
    Ok(scanned)
}

impl Reader<'_, '_> {
    /// Stat the entry `name` of the open directory `dir` (at `path`), and
    /// read it if it is a file; `kind` is its type as listed. `None`
    /// for what the tree leaves out.
    fn scan_entry(
        &self,
        dir: &File,
        path: &Path,
        name: &OsStr,
        kind: Option<Type>,
    ) -> Result<Option<Scanned>, WalkError> {
        let child = path.join(name);
        // With no stat cache to consult, every file is read: opened first
        // and its metadata taken from the open file, each is looked up by
        // name once, not for a stat, an xattr listing and an open.
        // Anything that did not open as a regular file (a link or a
        // directory put in its place since the listing, a file we may not
        // read) is stat'ed by name as any other entry.
        let open_first = self.options.cache.is_none_or(StatCache::is_empty);
        let opened = match kind {
            Some(Type::File) if open_first => objects::open_regular_in(dir, name).ok(),
            _ => None,
        };
        let (opened, meta) = match opened {
            Some((file, meta)) => (Some(file), Stat::from(&meta)),
            None => (
                None,
                stat::stat_at(dir, name).map_err(err(&child, "cannot stat"))?,
            ),
        };
        let key = meta.key();
        if self.skip.contains(&key) {
            return Ok(None);
        }
        if meta.is_dir() {
            // Its inode is taken when it is opened, to be scanned.
            return Ok(Some(Scanned {
                name: Name::from_slice(name.as_bytes()),
                key,
                inode: Inode::new(meta.mode),
                children: Vec::new(),
            }));
        }
        let reach = match &opened {
            Some(file) => Reach::Open(file),
            None => Reach::At(dir, name),
        };
        // Only files too large to inline are in the stat cache; one it
        // vouches had no xattrs is asked nothing more by name.
        let cached = match self.options.cache {
            Some(cache) if meta.is_regular() && meta.size > DEFAULT_INLINE_THRESHOLD => {
                cache.get(&meta.stamp())
            }
            _ => None,
        };
        let no_xattrs = cached.is_some_and(|c| !c.has_xattrs);
        let mut inode = inode_from(&child, &meta, reach, self.options, no_xattrs)?;
        if inode.file_type() == Some(FileType::Regular) && inode.size > 0 {
            let file = SourceFile {
                dir,
                name,
                path: &child,
                stamp: meta.stamp(),
                private: objects::is_private(inode.mode),
                opened,
                cached,
                // Not asked: never vouched to have none.
                has_xattrs: self.options.skip_xattrs || !inode.xattrs.is_empty(),
            };
            if meta.nlink <= 1 {
                build::set_content(&mut inode, self.read(file)?);
            } else if self.claim(key) {
                let content = self.read(file)?;
                self.lock_linked()
                    .insert(key, Some((content, inode.clone())));
            }
        }
        inode.nlink = meta.nlink.try_into().unwrap_or(u32::MAX);
        Ok(Some(Scanned {
            name: Name::from_slice(name.as_bytes()),
            key,
            inode,
            children: Vec::new(),
        }))
    }

    /// Scan the subdirectory `entry` of `parent`: opened by path, its
    /// parent being closed, and checked to be the directory found there,
    /// not one a link or a rename put in its place since.
    fn scan_subdir(&self, parent: &Path, entry: &mut Scanned) -> Result<(), WalkError> {
        let path = parent.join(OsStr::from_bytes(&entry.name));
        let dir = stat::open_dir(&path, false).map_err(|e| match e.raw_os_error() {
            // Gone, or a link or file in its place: with the reason.
            Some(nix::libc::ELOOP | nix::libc::ENOTDIR | nix::libc::ENOENT) => {
                err(&path, CHANGED)(e)
            }
            _ => err(&path, "cannot open")(e),
        })?;
        let meta = stat::stat_of(&dir).map_err(err(&path, "cannot stat"))?;
        if meta.key() != entry.key {
            return Err(changed(&path));
        }
        entry.inode = inode_from(&path, &meta, Reach::Open(&dir), self.options, false)?;
        entry.inode.nlink = meta.nlink.try_into().unwrap_or(u32::MAX);
        entry.children = scan_dir(&path, dir, self)?;
        Ok(())
    }
}

/// How the scan reaches an entry: open itself, or by name in its open
/// directory (not by its path: no walk of the path from the root).
#[derive(Clone, Copy)]
enum Reach<'a> {
    Open(&'a File),
    At(&'a File, &'a OsStr),
}

/// The inode of `path`, reached as `reach`, from its metadata (no
/// content yet); with no xattrs asked for where `no_xattrs` (the stat
/// cache vouches it has none).
fn inode_from(
    path: &Path,
    meta: &Stat,
    reach: Reach,
    options: &WalkOptions,
    no_xattrs: bool,
) -> Result<Inode, WalkError> {
    let mut inode = Inode::new(meta.mode);
    inode.uid = meta.uid;
    inode.gid = meta.gid;
    inode.mtime = Mtime {
        sec: meta.mtime.0,
        nsec: meta.mtime.1 as u32,
    };
    match inode.file_type() {
        Some(FileType::Regular) => inode.size = meta.size,
        Some(FileType::Symlink) => {
            let target = match reach {
                Reach::At(dir, name) => {
                    nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name).map_err(io::Error::from)
                }
                // Only links opened O_PATH have a target here.
                Reach::Open(file) => {
                    nix::fcntl::readlinkat(Some(file.as_raw_fd()), "").map_err(io::Error::from)
                }
            };
            let target = target.map_err(err(path, "cannot read symlink"))?.into_vec();
            inode.size = target.len() as u64;
            inode.payload = Some(target.into());
        }
        Some(FileType::BlockDevice | FileType::CharDevice) => {
            inode.rdev = encode_dev(meta.rdev).ok_or_else(|| {
                err(path, "device number does not fit the image format")(io::Error::from(
                    io::ErrorKind::InvalidData,
                ))
            })?;
        }
        Some(FileType::Directory) => inode.size = meta.size,
        _ => {}
    }
    let list_xattrs = !(options.skip_xattrs || no_xattrs);
    if list_xattrs {
        match reach {
            Reach::Open(file) => {
                for name in file.list_xattr().map_err(err(path, "cannot list xattrs"))? {
                    // One removed between listing and reading is simply gone.
                    let value = file.get_xattr(&name);
                    if let Some(value) = value.map_err(err(path, "cannot read xattr"))? {
                        inode.xattrs.insert(name.into_vec(), value);
                    }
                }
            }
            Reach::At(dir, name) => {
                let xattrs = stat::xattrs_at(dir, name).map_err(err(path, "cannot read xattrs"))?;
                for (name, value) in xattrs {
                    inode.xattrs.insert(name.into_vec(), value);
                }
            }
        }
    }
    // Reached by name, not open: the entry there must still be the one
    // stat'ed, unchanged (a rename or an xattr written changes its
    // ctime), or its link target or xattrs may be another's.
    let read_by_name = list_xattrs || inode.file_type() == Some(FileType::Symlink);
    if let (Reach::At(dir, name), true) = (reach, read_by_name) {
        let again = stat::stat_at(dir, name).map_err(err(path, "cannot stat"))?;
        if again.key() != meta.key() || again.ctime != meta.ctime {
            return Err(changed(path));
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

const CHANGED: &str = "file changed while it was read";

fn changed(path: &Path) -> WalkError {
    err(path, CHANGED)(io::Error::from(io::ErrorKind::InvalidData))
}
