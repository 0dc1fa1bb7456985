//! Serializing a [`Tree`] as a composefs image, byte for byte as the
//! reference mkcomposefs lays it out: inodes breadth-first with names in
//! bytewise order, compact inodes where they fit, multi-use xattrs shared,
//! directory and symlink tails packed into the inode's block, and external
//! files as chunk-based inodes with null chunks.

use std::collections::HashMap;
use std::ops::Range;

use foldhash::fast::RandomState;
use zerocopy::IntoBytes;

use super::format::*;
use super::overlay::{self, Context, Stored, Xattr, STUB_NAMES};
use super::ImageError;
use crate::tree::{
    FileType, InodeId, Mtime, Tree, MAX_INLINE_CONTENT, MAX_NAME_LEN, MAX_PATH_LEN, ROOT, S_IFDIR,
    S_IFLNK, S_IFMT,
};

/// Which image format versions the writer may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageOptions {
    /// The lowest version; the image uses it unless the tree needs more.
    pub min_version: u32,
    /// The highest version the writer may raise to.
    pub max_version: u32,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            min_version: 0,
            max_version: 1,
        }
    }
}

/// A written image and the format version it uses.
pub struct Image {
    pub bytes: Vec<u8>,
    pub version: u32,
}

/// Build the composefs image of `tree`.
pub fn write_image(tree: &Tree, options: &ImageOptions) -> Result<Image, ImageError> {
    for v in [options.min_version, options.max_version] {
        if v > MAX_FORMAT_VERSION {
            return Err(ImageError::UnsupportedVersion(v));
        }
    }
    let walk = Walk::new(tree)?;
    validate(tree, &walk)?;

    let mut holds_whiteouts = vec![false; tree.inodes.len()];
    let mut has_whiteouts = false;
    for &id in &walk.order {
        if id < tree.inodes.len() && tree.inodes[id].is_whiteout() {
            holds_whiteouts[walk.parent[id]] = true;
            has_whiteouts = true;
        }
    }
    let version = overlay::choose_version(has_whiteouts, options.min_version, options.max_version);
    let stored: Vec<Stored> = walk
        .order
        .iter()
        .map(|&id| match tree.inodes.get(id) {
            Some(inode) => overlay::stored(
                inode,
                &Context {
                    version,
                    is_root: id == ROOT,
                    holds_whiteouts: holds_whiteouts[id],
                },
            ),
            None => overlay::stub(tree.root()),
        })
        .collect();
    let plan = Plan::new(tree, &walk, &stored)?;
    let bytes = plan.serialize(&walk, &stored, version);
    Ok(Image { bytes, version })
}

/// The reachable inodes in breadth-first order of primary entries, with
/// the root's whiteout stubs as ids past the tree's last inode.
struct Walk {
    order: Vec<InodeId>,
    /// Position of each inode in `order` (u32::MAX when unreachable).
    index: Vec<u32>,
    /// Directory holding each inode's primary entry (the root's is itself).
    parent: Vec<InodeId>,
}

impl Walk {
    fn new(tree: &Tree) -> Result<Walk, ImageError> {
        let n = tree.inodes.len() + STUB_NAMES.len();
        let mut walk = Walk {
            order: Vec::with_capacity(n),
            index: vec![u32::MAX; n],
            parent: vec![ROOT; n],
        };
        if !tree.root().is_dir() {
            return Err(ImageError::invalid("/", "the root is not a directory"));
        }
        walk.index[ROOT] = 0;
        walk.order.push(ROOT);
        let mut next = 0;
        while next < walk.order.len() {
            let dir = walk.order[next];
            next += 1;
            if !tree.inodes.get(dir).is_some_and(|i| i.is_dir()) {
                continue;
            }
            for (_, id, primary) in entries(tree, dir) {
                if !primary {
                    continue;
                }
                if walk.index[id] != u32::MAX {
                    return Err(ImageError::invalid(
                        &walk.path(tree, dir),
                        "an inode has two primary entries",
                    ));
                }
                walk.index[id] = walk.order.len() as u32;
                walk.parent[id] = dir;
                walk.order.push(id);
            }
        }
        Ok(walk)
    }

    /// The path of a reachable inode of the tree, for error messages.
    fn path(&self, tree: &Tree, mut id: InodeId) -> String {
        let mut parts = Vec::new();
        while id != ROOT {
            let dir = self.parent[id];
            if let Some((name, _)) = tree.inodes[dir]
                .entries
                .iter()
                .find(|(_, e)| e.inode == id && !e.hardlink)
            {
                parts.push(name.escape_ascii().to_string());
            }
            id = dir;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }
}

/// A directory's entries as stored, in name order: (name, inode, primary).
/// The root also holds the whiteout stubs its own entries do not shadow.
fn entries(tree: &Tree, dir: InodeId) -> Vec<(&[u8], InodeId, bool)> {
    let inode = &tree.inodes[dir];
    let mut list: Vec<(&[u8], InodeId, bool)> = inode
        .entries
        .iter()
        .map(|(name, e)| (name.as_slice(), e.inode, !e.hardlink))
        .collect();
    if dir == ROOT {
        let first_stub = tree.inodes.len();
        for (i, name) in STUB_NAMES.iter().enumerate() {
            if !inode.entries.contains_key(name.as_slice()) {
                list.push((name, first_stub + i, true));
            }
        }
        list.sort_unstable_by(|a, b| a.0.cmp(b.0));
    }
    list
}

/// Refuse trees the format cannot hold, naming the path at fault.
fn validate(tree: &Tree, walk: &Walk) -> Result<(), ImageError> {
    for &id in &walk.order {
        let Some(inode) = tree.inodes.get(id) else {
            continue; // a whiteout stub
        };
        let fail = |message: String| ImageError::invalid(&walk.path(tree, id), &message);
        let Some(ty) = inode.file_type() else {
            return Err(fail(format!(
                "mode {:o} has no valid file type",
                inode.mode
            )));
        };
        if !inode.entries.is_empty() && ty != FileType::Directory {
            return Err(fail("only a directory can have entries".into()));
        }
        for (name, entry) in &inode.entries {
            if name.is_empty()
                || name.len() > MAX_NAME_LEN
                || name == b"."
                || name == b".."
                || name.contains(&b'/')
                || name.contains(&0)
            {
                return Err(fail(format!("invalid file name '{}'", name.escape_ascii())));
            }
            if entry.hardlink {
                let target = entry.inode;
                if walk.index.get(target).is_none_or(|&i| i == u32::MAX) {
                    return Err(fail("hard link to an inode outside the tree".into()));
                }
                if tree.inodes[target].is_dir() {
                    return Err(fail("hard link to a directory".into()));
                }
            }
        }
        if let Some(p) = &inode.payload {
            if p.len() > MAX_PATH_LEN {
                return Err(fail(format!("payload longer than {MAX_PATH_LEN} bytes")));
            }
        }
        match ty {
            FileType::Symlink if inode.payload.as_ref().is_none_or(|p| p.is_empty()) => {
                return Err(fail("symlink without a target".into()));
            }
            FileType::Regular => {
                if let Some(c) = &inode.content {
                    if c.len() as u64 != inode.size || c.len() > MAX_INLINE_CONTENT {
                        return Err(fail(format!(
                            "inline content of {} bytes (size {}, at most {MAX_INLINE_CONTENT})",
                            c.len(),
                            inode.size
                        )));
                    }
                } else if inode.size > 0 && chunking(inode.size).1 > MAX_CHUNKS {
                    return Err(fail(format!(
                        "file of {} bytes is too large for a composefs image",
                        inode.size
                    )));
                }
            }
            _ => {}
        }
        for (key, value) in &inode.xattrs {
            if key.is_empty() || key.len() > 255 || key.contains(&0) {
                return Err(fail(format!("invalid xattr name '{}'", key.escape_ascii())));
            }
            if value.len() > u16::MAX as usize {
                return Err(fail("xattr value longer than 65535 bytes".into()));
            }
        }
    }
    Ok(())
}

/// Where one inode goes and how it is stored.
#[derive(Clone, Default)]
struct InodePlan {
    compact: bool,
    /// Zero bytes written before the inode.
    pad: u64,
    nid: u64,
    /// Blocks of data stored outside the inode.
    blocks: u64,
    /// Bytes of data stored right after the inode and its xattrs.
    tail: usize,
    /// Per xattr in name order: its offset in the shared area, if shared.
    xattrs: Vec<Option<u64>>,
    xattr_size: usize,
    nlink: u32,
}

/// The whole image layout, computed before a byte is written.
struct Plan<'t> {
    inodes: Vec<InodePlan>,
    /// Directory entries with `.` and `..`, by position in the walk.
    dirents: Vec<Vec<(&'t [u8], InodeId)>>,
    shared: Vec<(&'t [u8], &'t [u8])>,
    shared_size: u64,
    min_mtime: Mtime,
    has_acl: bool,
    inodes_end: u64,
    data_start: u64,
    data_blocks: u64,
}

impl<'t> Plan<'t> {
    fn new(tree: &'t Tree, walk: &Walk, nodes: &'t [Stored<'t>]) -> Result<Plan<'t>, ImageError> {
        let min_mtime = nodes.iter().map(|n| n.mtime).min().unwrap_or_default();
        let has_acl = nodes.iter().any(|n| {
            n.xattrs.iter().any(|(k, _)| {
                k.as_ref() == b"system.posix_acl_access"
                    || k.as_ref() == b"system.posix_acl_default"
            })
        });

        let dirents: Vec<_> = walk
            .order
            .iter()
            .map(|&id| dirents_of(tree, walk, id))
            .collect();

        // Xattrs used more than once are stored once, in descending order.
        let mut uses: HashMap<(&[u8], &[u8]), u32, RandomState> = HashMap::default();
        for n in nodes {
            for (k, v) in &n.xattrs {
                *uses.entry((k.as_ref(), v.as_ref())).or_default() += 1;
            }
        }
        let mut shared: Vec<(&[u8], &[u8])> = uses
            .iter()
            .filter(|(_, &count)| count > 1)
            .map(|(&kv, _)| kv)
            .collect();
        shared.sort_unstable_by(|a, b| {
            b.0.cmp(a.0)
                .then(b.1.len().cmp(&a.1.len()))
                .then(b.1.cmp(a.1))
        });
        let mut shared_offset: HashMap<_, _, RandomState> =
            HashMap::with_capacity_and_hasher(shared.len(), RandomState::default());
        let mut shared_size = 0u64;
        for &(k, v) in &shared {
            shared_offset.insert((k, v), shared_size);
            shared_size += xattr_entry_size(k, v.len()) as u64;
        }

        let mut plan = Plan {
            inodes: Vec::with_capacity(nodes.len()),
            dirents,
            shared,
            shared_size,
            min_mtime,
            has_acl,
            inodes_end: 0,
            data_start: 0,
            data_blocks: 0,
        };

        let mut pos = SUPERBLOCK_OFFSET + size_of::<Superblock>() as u64;
        for (i, inode) in nodes.iter().enumerate() {
            let mut p = InodePlan::default();
            let mut n_shared = 0;
            let mut unshared_size = 0;
            for (k, v) in &inode.xattrs {
                let offset = shared_offset
                    .get(&(k.as_ref(), v.as_ref()))
                    .copied()
                    .filter(|_| n_shared < MAX_SHARED_XATTRS_PER_INODE);
                match offset {
                    Some(_) => n_shared += 1,
                    None => unshared_size += xattr_entry_size(k, v.len()),
                }
                p.xattrs.push(offset);
            }
            if !inode.xattrs.is_empty() {
                p.xattr_size =
                    (XATTR_HEADER_SIZE + n_shared * 4 + unshared_size).next_multiple_of(4);
            }
            if p.xattr_size > XATTR_HEADER_SIZE + (u16::MAX as usize - 1) * 4 {
                return Err(ImageError::invalid(
                    &walk.path(tree, walk.order[i]),
                    "xattrs too large for one inode",
                ));
            }
            let is_dir = inode.mode & S_IFMT == S_IFDIR;
            p.nlink = if is_dir {
                let subdirs = tree.inodes[walk.order[i]]
                    .entries
                    .values()
                    .filter(|e| tree.inodes[e.inode].is_dir())
                    .count();
                2 + subdirs as u32
            } else {
                inode.nlink
            };

            let (blocks, tail) = plan.data_shape(inode, i);
            p.blocks = blocks;
            p.tail = tail;
            let size = if is_dir {
                blocks * BLOCK_SIZE + tail as u64
            } else {
                inode.size
            };
            p.compact = inode.mtime == min_mtime
                && p.nlink <= u16::MAX as u32
                && inode.uid <= u16::MAX as u32
                && inode.gid <= u16::MAX as u32
                && size <= u32::MAX as u64;
            let inode_size = if p.compact {
                INODE_COMPACT_SIZE
            } else {
                INODE_EXTENDED_SIZE
            };

            let aligned = pos.next_multiple_of(SLOT_SIZE);
            p.pad = aligned - pos;
            pos = aligned;
            let extra = tail_padding(&mut p, inode, pos, inode_size);
            p.pad += extra;
            pos += extra;
            p.nid = pos / SLOT_SIZE;
            plan.data_blocks += p.blocks;
            pos += (inode_size + p.xattr_size + p.tail) as u64;
            plan.inodes.push(p);
        }
        plan.inodes_end = pos.next_multiple_of(SLOT_SIZE);
        plan.data_start = (plan.inodes_end + plan.shared_size).next_multiple_of(BLOCK_SIZE);
        if plan.inodes[0].nid > u16::MAX as u64 {
            return Err(ImageError::invalid(
                "/",
                "root inode placed beyond nid 65535",
            ));
        }
        Ok(plan)
    }

    /// Blocks and tail bytes of an inode's data before placement.
    fn data_shape(&self, inode: &Stored, i: usize) -> (u64, usize) {
        match FileType::from_mode(inode.mode) {
            Some(FileType::Directory) => {
                let mut blocks = 0;
                let mut used = 0;
                for (name, _) in &self.dirents[i] {
                    let len = DIRENT_SIZE + name.len();
                    if used + len > BLOCK_SIZE as usize {
                        blocks += 1;
                        used = 0;
                    }
                    used += len;
                }
                // Never inline more than half a block.
                if used > BLOCK_SIZE as usize / 2 {
                    (blocks + 1, 0)
                } else {
                    (blocks, used)
                }
            }
            Some(FileType::Symlink) => (0, inode.payload.map_or(0, |p| p.len())),
            Some(FileType::Regular) if inode.size > 0 => match inode.content {
                Some(_) => {
                    let blocks = inode.size / BLOCK_SIZE;
                    let tail = (inode.size % BLOCK_SIZE) as usize;
                    if tail > BLOCK_SIZE as usize / 2 {
                        (blocks + 1, 0)
                    } else {
                        (blocks, tail)
                    }
                }
                None => (0, chunking(inode.size).1 as usize * 4),
            },
            _ => (0, 0),
        }
    }

    fn serialize(&self, walk: &Walk, nodes: &[Stored], version: u32) -> Vec<u8> {
        let total = self.data_start + self.data_blocks * BLOCK_SIZE;
        let mut out = Vec::with_capacity(total as usize);

        let header = ComposefsHeader {
            magic: COMPOSEFS_MAGIC.into(),
            version: COMPOSEFS_HEADER_VERSION.into(),
            flags: (if self.has_acl {
                COMPOSEFS_FLAG_HAS_ACL
            } else {
                0
            })
            .into(),
            composefs_version: version.into(),
            ..Default::default()
        };
        out.extend_from_slice(header.as_bytes());
        out.resize(SUPERBLOCK_OFFSET as usize, 0);
        let sb = Superblock {
            magic: EROFS_MAGIC.into(),
            feature_compat: (FEATURE_COMPAT_MTIME | FEATURE_COMPAT_XATTR_FILTER).into(),
            blkszbits: BLOCK_BITS,
            root_nid: (self.inodes[0].nid as u16).into(),
            inos: (walk.order.len() as u64).into(),
            build_time: (self.min_mtime.sec as u64).into(),
            build_time_nsec: self.min_mtime.nsec.into(),
            blocks: ((self.data_start / BLOCK_SIZE + self.data_blocks) as u32).into(),
            meta_blkaddr: 0.into(),
            xattr_blkaddr: ((self.inodes_end / BLOCK_SIZE) as u32).into(),
            ..Default::default()
        };
        out.extend_from_slice(sb.as_bytes());

        let mut next_block = self.data_start / BLOCK_SIZE;
        for (i, node) in nodes.iter().enumerate() {
            self.write_inode(&mut out, walk, nodes, i, node, &mut next_block);
        }
        pad_to(&mut out, SLOT_SIZE);
        debug_assert_eq!(out.len() as u64, self.inodes_end);
        for &(k, v) in &self.shared {
            write_xattr(&mut out, k, v);
        }
        pad_to(&mut out, BLOCK_SIZE);
        debug_assert_eq!(out.len() as u64, self.data_start);

        for (i, node) in nodes.iter().enumerate() {
            self.write_data_blocks(&mut out, walk, nodes, i, node);
        }
        debug_assert_eq!(out.len() as u64, total);
        out
    }

    fn write_inode(
        &self,
        out: &mut Vec<u8>,
        walk: &Walk,
        nodes: &[Stored],
        i: usize,
        inode: &Stored,
        next_block: &mut u64,
    ) {
        let p = &self.inodes[i];
        out.resize(out.len() + p.pad as usize, 0);
        debug_assert_eq!(out.len() as u64, p.nid * SLOT_SIZE);
        let ty = FileType::from_mode(inode.mode).expect("validated");
        let mut layout = if p.tail > 0 {
            LAYOUT_FLAT_INLINE
        } else {
            LAYOUT_FLAT_PLAIN
        };
        let mut chunk_format = None;
        let size = match ty {
            FileType::Directory => p.blocks * BLOCK_SIZE + p.tail as u64,
            FileType::Regular => {
                if inode.size > 0 && inode.content.is_none() {
                    layout = LAYOUT_CHUNK_BASED;
                    chunk_format = Some(chunking(inode.size).0 - BLOCK_BITS as u32);
                }
                inode.size
            }
            FileType::Symlink if p.blocks == 0 => p.tail as u64,
            FileType::Symlink => inode.size,
            _ => 0,
        };
        let mut u = 0u32;
        match ty {
            FileType::BlockDevice | FileType::CharDevice => u = inode.rdev,
            FileType::Directory | FileType::Regular | FileType::Symlink => {
                if p.blocks > 0 {
                    u = *next_block as u32;
                    *next_block += p.blocks;
                }
                // The chunk format shares the field's low half with the
                // block address, as in the reference writer.
                if let Some(f) = chunk_format {
                    u = (u & 0xffff_0000) | f;
                }
            }
            _ => {}
        }
        let xattr_icount = if p.xattr_size == 0 {
            0
        } else {
            ((p.xattr_size - XATTR_HEADER_SIZE) / 4 + 1) as u16
        };
        let ino = walk.index[walk.order[i]];
        if p.compact {
            let raw = InodeCompact {
                format: (layout << FORMAT_LAYOUT_SHIFT).into(),
                xattr_icount: xattr_icount.into(),
                mode: (inode.mode as u16).into(),
                nlink: (p.nlink as u16).into(),
                size: (size as u32).into(),
                u: u.into(),
                ino: ino.into(),
                uid: (inode.uid as u16).into(),
                gid: (inode.gid as u16).into(),
                ..Default::default()
            };
            out.extend_from_slice(raw.as_bytes());
        } else {
            let raw = InodeExtended {
                format: (layout << FORMAT_LAYOUT_SHIFT | FORMAT_EXTENDED).into(),
                xattr_icount: xattr_icount.into(),
                mode: (inode.mode as u16).into(),
                size: size.into(),
                u: u.into(),
                ino: ino.into(),
                uid: inode.uid.into(),
                gid: inode.gid.into(),
                mtime: (inode.mtime.sec as u64).into(),
                mtime_nsec: inode.mtime.nsec.into(),
                nlink: p.nlink.into(),
                ..Default::default()
            };
            out.extend_from_slice(raw.as_bytes());
        }

        if p.xattr_size > 0 {
            let start = out.len();
            let shared_count = p.xattrs.iter().flatten().count();
            let header = XattrHeader {
                name_filter: name_filter(&inode.xattrs).into(),
                shared_count: shared_count as u8,
                ..Default::default()
            };
            out.extend_from_slice(header.as_bytes());
            let base = self.inodes_end % BLOCK_SIZE;
            for off in p.xattrs.iter().flatten() {
                out.extend_from_slice(&(((base + off) / 4) as u32).to_le_bytes());
            }
            for ((k, v), offset) in inode.xattrs.iter().zip(&p.xattrs) {
                if offset.is_none() {
                    write_xattr(out, k, v);
                }
            }
            debug_assert_eq!(out.len() - start, p.xattr_size);
        }

        if p.tail == 0 {
            return;
        }
        match ty {
            FileType::Directory => {
                let chunks = dirent_chunks(&self.dirents[i]);
                let last = chunks.last().expect("a directory has . and ..");
                write_dirent_chunk(out, walk, nodes, &self.dirents[i][last.clone()], self);
            }
            FileType::Symlink => out.extend_from_slice(inode.payload.unwrap_or_default()),
            FileType::Regular => match inode.content {
                Some(c) => out.extend_from_slice(&c[c.len() - p.tail..]),
                None => {
                    for _ in 0..p.tail / 4 {
                        out.extend_from_slice(&NULL_CHUNK.to_le_bytes());
                    }
                }
            },
            _ => {}
        }
    }

    fn write_data_blocks(
        &self,
        out: &mut Vec<u8>,
        walk: &Walk,
        nodes: &[Stored],
        i: usize,
        inode: &Stored,
    ) {
        let p = &self.inodes[i];
        if p.blocks == 0 {
            return;
        }
        match FileType::from_mode(inode.mode) {
            Some(FileType::Directory) => {
                let chunks = dirent_chunks(&self.dirents[i]);
                for range in chunks.into_iter().take(p.blocks as usize) {
                    write_dirent_chunk(out, walk, nodes, &self.dirents[i][range], self);
                    pad_to(out, BLOCK_SIZE);
                }
            }
            Some(FileType::Regular) => match inode.content {
                Some(c) => {
                    let end = (p.blocks * BLOCK_SIZE).min(c.len() as u64) as usize;
                    out.extend_from_slice(&c[..end]);
                    pad_to(out, BLOCK_SIZE);
                }
                None => {
                    for _ in 0..MAX_CHUNKS {
                        out.extend_from_slice(&NULL_CHUNK.to_le_bytes());
                    }
                }
            },
            Some(FileType::Symlink) => {
                out.extend_from_slice(inode.payload.unwrap_or_default());
                pad_to(out, BLOCK_SIZE);
            }
            _ => {}
        }
    }
}

/// Padding that keeps an inode's tail inside one block, adjusting the plan
/// when the tail cannot fit and must move to a block of its own.
fn tail_padding(p: &mut InodePlan, inode: &Stored, pos: u64, inode_size: usize) -> u64 {
    let non_tail = (inode_size + p.xattr_size) as u64;
    let total = non_tail + p.tail as u64;
    if inode.mode & S_IFMT == S_IFLNK {
        // A symlink keeps inode and target in one block, or moves the
        // target to a block of its own when the two exceed a block.
        let first = pos / BLOCK_SIZE;
        let last = (pos + total - 1) / BLOCK_SIZE;
        if total / BLOCK_SIZE > 0 {
            p.blocks += 1;
            p.tail = 0;
        }
        return if first != last {
            pos.next_multiple_of(BLOCK_SIZE) - pos
        } else {
            0
        };
    }
    let remainder = BLOCK_SIZE - (pos + non_tail) % BLOCK_SIZE;
    if remainder >= p.tail as u64 {
        return 0;
    }
    let pad = remainder.next_multiple_of(SLOT_SIZE);
    let remainder = BLOCK_SIZE - (pos + non_tail + pad) % BLOCK_SIZE;
    if p.tail as u64 <= remainder {
        return pad;
    }
    p.blocks += 1;
    p.tail = 0;
    pos.next_multiple_of(BLOCK_SIZE) - pos
}

/// A directory's entries with `.` and `..`, in bytewise name order.
fn dirents_of<'t>(tree: &'t Tree, walk: &Walk, id: InodeId) -> Vec<(&'t [u8], InodeId)> {
    if !tree.inodes.get(id).is_some_and(|i| i.is_dir()) {
        return Vec::new();
    }
    let listed = entries(tree, id);
    let mut list: Vec<(&[u8], InodeId)> = Vec::with_capacity(listed.len() + 2);
    let dots: [(&[u8], InodeId); 2] = [(b".", id), (b"..", walk.parent[id])];
    let mut dots = dots.into_iter().peekable();
    for (name, target, _) in listed {
        while let Some(&(dot, dot_target)) = dots.peek() {
            if dot < name {
                list.push((dot, dot_target));
                dots.next();
            } else {
                break;
            }
        }
        list.push((name, target));
    }
    list.extend(dots);
    list
}

/// Split directory entries into block-sized runs: every run but the last
/// fills a block; the last is either a block or the inline tail.
fn dirent_chunks(dirents: &[(&[u8], InodeId)]) -> Vec<Range<usize>> {
    let mut chunks = Vec::new();
    let mut first = 0;
    let mut used = 0;
    for (i, (name, _)) in dirents.iter().enumerate() {
        let len = DIRENT_SIZE + name.len();
        if used + len > BLOCK_SIZE as usize {
            chunks.push(first..i);
            first = i;
            used = 0;
        }
        used += len;
    }
    chunks.push(first..dirents.len());
    chunks
}

fn write_dirent_chunk(
    out: &mut Vec<u8>,
    walk: &Walk,
    nodes: &[Stored],
    dirents: &[(&[u8], InodeId)],
    plan: &Plan,
) {
    let mut nameoff = dirents.len() * DIRENT_SIZE;
    for &(name, target) in dirents {
        let idx = walk.index[target] as usize;
        let d = Dirent {
            nid: plan.inodes[idx].nid.into(),
            nameoff: (nameoff as u16).into(),
            file_type: file_type_code(nodes[idx].mode),
            reserved: 0,
        };
        out.extend_from_slice(d.as_bytes());
        nameoff += name.len();
    }
    for &(name, _) in dirents {
        out.extend_from_slice(name);
    }
}

fn file_type_code(mode: u32) -> u8 {
    match FileType::from_mode(mode) {
        Some(FileType::Regular) => FT_REG_FILE,
        Some(FileType::Directory) => FT_DIR,
        Some(FileType::CharDevice) => FT_CHRDEV,
        Some(FileType::BlockDevice) => FT_BLKDEV,
        Some(FileType::Fifo) => FT_FIFO,
        Some(FileType::Socket) => FT_SOCK,
        Some(FileType::Symlink) => FT_SYMLINK,
        None => 0,
    }
}

fn write_xattr(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let (index, suffix) = split_xattr_name(name);
    let entry = XattrEntry {
        name_len: suffix.len() as u8,
        name_index: index,
        value_size: (value.len() as u16).into(),
    };
    out.extend_from_slice(entry.as_bytes());
    out.extend_from_slice(suffix);
    out.extend_from_slice(value);
    pad_to(out, 4);
}

/// The inode's xattr name bloom filter: bit set = no name hashes there.
fn name_filter(xattrs: &[Xattr]) -> u32 {
    let mut bits = 0u32;
    for (name, _) in xattrs {
        let (index, suffix) = split_xattr_name(name);
        let h = xxhash_rust::xxh32::xxh32(suffix, XATTR_FILTER_SEED.wrapping_add(index as u32));
        bits |= 1 << (h & 31);
    }
    !bits
}

fn pad_to(out: &mut Vec<u8>, align: u64) {
    let len = (out.len() as u64).next_multiple_of(align);
    out.resize(len as usize, 0);
}
