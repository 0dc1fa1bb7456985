//! The in-memory filesystem tree: inodes and the directory entries that name
//! them, as a composefs image or dumpfile describes them.
//!
//! Inodes live in one arena; directory entries refer to them by index, so a
//! hard link is simply a second entry naming the same inode. Each inode has
//! exactly one *primary* entry (the root has none); every other entry naming
//! it is a hard link. The image writer numbers inodes by walking primary
//! entries breadth-first, so which entry is primary is part of the tree.

use std::collections::BTreeMap;

/// Index of an inode in [`Tree::inodes`].
pub type InodeId = usize;

/// The root directory is always the first inode.
pub const ROOT: InodeId = 0;

pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;

/// Longest file name a directory entry may carry.
pub const MAX_NAME_LEN: usize = 255;
/// Longest symlink target or backing path (PATH_MAX without the NUL).
pub const MAX_PATH_LEN: usize = 4095;
/// Largest regular file whose content may be stored inside the image.
pub const MAX_INLINE_CONTENT: usize = 5000;
/// Files up to this size are inlined when a tree is read from a directory.
pub const DEFAULT_INLINE_THRESHOLD: u64 = 64;

/// The kind of filesystem object an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
}

impl FileType {
    /// The file type encoded in `mode`, or `None` for an unknown type.
    pub fn from_mode(mode: u32) -> Option<FileType> {
        Some(match mode & S_IFMT {
            S_IFREG => FileType::Regular,
            S_IFDIR => FileType::Directory,
            S_IFLNK => FileType::Symlink,
            S_IFBLK => FileType::BlockDevice,
            S_IFCHR => FileType::CharDevice,
            S_IFIFO => FileType::Fifo,
            S_IFSOCK => FileType::Socket,
            _ => return None,
        })
    }
}

/// Modification time: seconds since the epoch and nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mtime {
    pub sec: i64,
    pub nsec: u32,
}

/// A file name. Most are short: held inline up to 16 bytes, so a tree of
/// a million entries does not make a million small allocations.
pub type Name = smallvec::SmallVec<[u8; 16]>;

/// A name in a directory and the inode it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub inode: InodeId,
    /// True when this entry is a hard link: another entry is the inode's primary.
    pub hardlink: bool,
}

/// One inode with everything a composefs image records about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inode {
    /// st_mode: file type and permission bits.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// Device number in the kernel's 32-bit `new_encode_dev` form.
    pub rdev: u32,
    /// Size in bytes (regular files and symlinks; ignored for directories).
    pub size: u64,
    pub mtime: Mtime,
    /// Symlink target, or for regular files the backing file's path
    /// relative to the object store (`XX/YYYY…`).
    pub payload: Option<Box<[u8]>>,
    /// Content stored inside the image instead of in a backing file.
    pub content: Option<Box<[u8]>>,
    /// fs-verity digest of the content.
    pub digest: Option<[u8; 32]>,
    /// Extended attributes, ordered by name.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Directory entries by name (directories only).
    pub entries: BTreeMap<Name, DirEntry>,
}

impl Inode {
    pub fn new(mode: u32) -> Inode {
        Inode {
            mode,
            nlink: 1,
            ..Inode::default()
        }
    }

    pub fn file_type(&self) -> Option<FileType> {
        FileType::from_mode(self.mode)
    }

    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    /// An overlayfs whiteout: a character device with device number 0:0.
    pub fn is_whiteout(&self) -> bool {
        self.mode & S_IFMT == S_IFCHR && self.rdev == 0
    }
}

/// A filesystem tree: an arena of inodes whose first element is the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    pub inodes: Vec<Inode>,
}

impl Tree {
    /// A tree holding only `root`, which must be a directory.
    pub fn new(root: Inode) -> Tree {
        debug_assert!(root.is_dir());
        Tree { inodes: vec![root] }
    }

    pub fn root(&self) -> &Inode {
        &self.inodes[ROOT]
    }

    pub fn add_inode(&mut self, inode: Inode) -> InodeId {
        self.inodes.push(inode);
        self.inodes.len() - 1
    }

    /// Visit every entry depth-first, parents before children and names in
    /// bytewise order within a directory: the order of a dumpfile. The
    /// callback gets the path components, the inode and whether the entry
    /// is a hard link. Iterative, so deep trees cannot exhaust the stack.
    pub fn walk(&self, mut visit: impl FnMut(&[&[u8]], InodeId, bool)) {
        visit(&[], ROOT, false);
        let mut stack = vec![self.inodes[ROOT].entries.iter()];
        let mut path: Vec<&[u8]> = Vec::new();
        while let Some(entries) = stack.last_mut() {
            let Some((name, entry)) = entries.next() else {
                stack.pop();
                path.pop();
                continue;
            };
            path.push(name);
            visit(&path, entry.inode, entry.hardlink);
            let inode = &self.inodes[entry.inode];
            if inode.is_dir() && !entry.hardlink {
                stack.push(inode.entries.iter());
            } else {
                path.pop();
            }
        }
    }

    /// Set each non-directory's link count to the names it has in the
    /// tree, after names were replaced or deleted.
    pub fn count_links(&mut self) {
        let mut links = vec![0u32; self.inodes.len()];
        self.walk(|_, id, _| links[id] += 1);
        for (inode, n) in self.inodes.iter_mut().zip(links) {
            if !inode.is_dir() && n > 0 {
                inode.nlink = n;
            }
        }
    }

    /// Make the first entry of each multiply-linked inode, in breadth-first
    /// order with names sorted, its primary: a choice that depends on the
    /// tree alone, not on the order a source listed it in.
    pub fn canonicalize_hardlinks(&mut self) {
        let mut seen = vec![false; self.inodes.len()];
        let mut queue = std::collections::VecDeque::from([ROOT]);
        while let Some(dir) = queue.pop_front() {
            let mut entries = std::mem::take(&mut self.inodes[dir].entries);
            for entry in entries.values_mut() {
                if self.inodes[entry.inode].is_dir() {
                    if !entry.hardlink {
                        queue.push_back(entry.inode);
                    }
                    continue;
                }
                entry.hardlink = std::mem::replace(&mut seen[entry.inode], true);
            }
            self.inodes[dir].entries = entries;
        }
    }

    /// The inode at an absolute path (symlinks are not followed).
    pub fn lookup(&self, path: &[u8]) -> Option<InodeId> {
        let mut id = ROOT;
        for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            id = self.inodes[id].entries.get(c)?.inode;
        }
        Some(id)
    }

    /// Apply the source filters of mkcomposefs to every inode.
    pub fn apply_filters(&mut self, filters: &SourceFilters) {
        if filters.skip_devices {
            let inodes = &self.inodes;
            let mut dropped = Vec::new();
            for (dir_id, dir) in inodes.iter().enumerate() {
                for (name, entry) in &dir.entries {
                    let ty = inodes[entry.inode].file_type();
                    if matches!(ty, Some(FileType::BlockDevice | FileType::CharDevice)) {
                        dropped.push((dir_id, name.clone()));
                    }
                }
            }
            for (dir, name) in dropped {
                self.inodes[dir].entries.remove(&name);
            }
        }
        for inode in &mut self.inodes {
            if filters.use_epoch {
                inode.mtime = Mtime::default();
            }
            if filters.skip_xattrs {
                inode.xattrs.clear();
            } else if filters.user_xattrs {
                inode.xattrs.retain(|k, _| k.starts_with(b"user."));
            }
        }
    }
}

/// What to leave out of a tree, as mkcomposefs's source options say.
#[derive(Clone, Copy, Debug, Default)]
pub struct SourceFilters {
    /// Record every mtime as the epoch.
    pub use_epoch: bool,
    /// Drop block and character devices.
    pub skip_devices: bool,
    /// Drop all extended attributes.
    pub skip_xattrs: bool,
    /// Keep only `user.*` extended attributes.
    pub user_xattrs: bool,
}

/// The object-store path of a digest: `XX/YYYY…` in lower-case hex.
pub fn object_path(digest: &[u8; 32]) -> String {
    let hex = crate::fsverity::Hex::new(digest);
    let hex = hex.as_str();
    let mut path = String::with_capacity(65);
    path.push_str(&hex[..2]);
    path.push('/');
    path.push_str(&hex[2..]);
    path
}

/// Path components all symlink resolutions of one tree may take together
/// (a tree of links to long links to long links could take hours).
const LINK_STEPS: u64 = 20_000_000;

/// Why a link was not resolved.
enum Unresolved {
    Climbs,
    TooCostly,
}

impl Tree {
    /// A relative symlink that, resolved in the tree through the links it
    /// meets (as the kernel would resolve it in a checkout), climbs above
    /// the tree's root: its path and why. Links checked one at a time can
    /// climb out together (`d/p0 -> ..`, `d/p1 -> p0/..`, `d/x ->
    /// p1/etc/hostname`). Absolute targets resolve inside the tree once
    /// it is the root, and are not followed.
    pub fn link_climbing_out(&self) -> Option<(Vec<u8>, String)> {
        let mut found = None;
        let mut budget = LINK_STEPS;
        self.walk(|components, id, _| {
            let inode = &self.inodes[id];
            if found.is_some() || inode.file_type() != Some(FileType::Symlink) {
                return;
            }
            let target = inode.payload.as_deref().unwrap_or_default();
            if target.starts_with(b"/") {
                return;
            }
            // The directories from the root to the link's own.
            let mut at = vec![Some(ROOT)];
            for c in &components[..components.len() - 1] {
                let dir = at.last().copied().flatten();
                at.push(
                    dir.and_then(|d| self.inodes[d].entries.get(*c))
                        .map(|e| e.inode),
                );
            }
            let mut hops = 0;
            let why = match self.resolve_within(at, target, &mut hops, &mut budget) {
                Ok(_) => return,
                Err(Unresolved::Climbs) => format!(
                    "symlink target {} points outside the tree (through the links it passes)",
                    target.escape_ascii()
                ),
                Err(Unresolved::TooCostly) => format!(
                    "symlinks that take more than {LINK_STEPS} steps to resolve, all together"
                ),
            };
            found = Some((components.join(&b'/'), why));
        });
        found
    }

    /// Where `target` leads from the directory at the end of `at` (the
    /// directories from the root; None for one the tree does not have,
    /// which a checkout's user could still create): Some(directories)
    /// where it ends, None where no later change can make it lead
    /// anywhere (an absolute link, too many links), Err if it climbs
    /// above the root.
    fn resolve_within(
        &self,
        mut at: Vec<Option<InodeId>>,
        target: &[u8],
        hops: &mut u32,
        budget: &mut u64,
    ) -> Result<Option<Vec<Option<InodeId>>>, Unresolved> {
        for part in target.split(|&b| b == b'/') {
            *budget = budget.checked_sub(1).ok_or(Unresolved::TooCostly)?;
            match part {
                b"" | b"." => {}
                b".." => {
                    if at.len() == 1 {
                        return Err(Unresolved::Climbs);
                    }
                    at.pop();
                }
                name => {
                    let entry = at
                        .last()
                        .copied()
                        .flatten()
                        .and_then(|d| self.inodes[d].entries.get(name));
                    let Some(entry) = entry else {
                        at.push(None);
                        continue;
                    };
                    let inode = &self.inodes[entry.inode];
                    match inode.file_type() {
                        Some(FileType::Symlink) => {
                            *hops += 1;
                            let link = inode.payload.as_deref().unwrap_or_default();
                            // 40: the kernel's limit; beyond it the walk
                            // fails.
                            if *hops > 40 || link.starts_with(b"/") {
                                return Ok(None);
                            }
                            match self.resolve_within(at, link, hops, budget)? {
                                Some(next) => at = next,
                                None => return Ok(None),
                            }
                        }
                        Some(FileType::Directory) => at.push(Some(entry.inode)),
                        // Not a directory: a walk through it fails, unless
                        // it is replaced by one later.
                        _ => at.push(None),
                    }
                }
            }
        }
        Ok(Some(at))
    }
}
