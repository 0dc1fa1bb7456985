//! Serializing a [`Tree`] as a composefs image, byte for byte as the
//! reference mkcomposefs lays it out: inodes breadth-first with names in
//! bytewise order, compact inodes where they fit, multi-use xattrs shared,
//! directory and symlink tails packed into the inode's block, and external
//! files as chunk-based inodes with null chunks.
//!
//! The image is laid out first ([`plan_image`]: where every inode goes),
//! then streamed in one pass ([`ImagePlan::write_to`]). Nothing is held
//! per inode but its position and file type: how an inode is stored is
//! computed again when it is written, so memory does not grow with the
//! image, only with the tree.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::ops::Range;

use foldhash::fast::{FixedState, RandomState};
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

/// Build the composefs image of `tree` in memory (see [`plan_image`] for
/// writing it as it is made).
pub fn write_image(tree: &Tree, options: &ImageOptions) -> Result<Image, ImageError> {
    let plan = plan_image(tree, options)?;
    let mut bytes = Vec::with_capacity(plan.size() as usize);
    plan.write_to(&mut bytes)
        .expect("writing to memory does not fail");
    Ok(Image {
        bytes,
        version: plan.version,
    })
}

/// Lay out the image of `tree`, refusing trees the format cannot hold.
pub fn plan_image<'t>(tree: &'t Tree, options: &ImageOptions) -> Result<ImagePlan<'t>, ImageError> {
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
            holds_whiteouts[walk.parent[id] as InodeId] = true;
            has_whiteouts = true;
        }
    }
    let version = overlay::choose_version(has_whiteouts, options.min_version, options.max_version);
    ImagePlan::new(tree, walk, holds_whiteouts, version)
}

/// The reachable inodes in breadth-first order of primary entries, with
/// the root's whiteout stubs as ids past the tree's last inode.
struct Walk {
    order: Vec<InodeId>,
    /// Position of each inode in `order` (u32::MAX when unreachable).
    index: Vec<u32>,
    /// Directory holding each inode's primary entry (the root's is itself).
    parent: Vec<u32>,
}

impl Walk {
    fn new(tree: &Tree) -> Result<Walk, ImageError> {
        let n = tree.inodes.len() + STUB_NAMES.len();
        let mut walk = Walk {
            order: Vec::with_capacity(n),
            index: vec![u32::MAX; n],
            parent: vec![ROOT as u32; n],
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
                walk.parent[id] = dir as u32;
                walk.order.push(id);
            }
        }
        Ok(walk)
    }

    /// The path of a reachable inode of the tree, for error messages.
    fn path(&self, tree: &Tree, mut id: InodeId) -> String {
        let mut parts = Vec::new();
        while id != ROOT {
            let dir = self.parent[id] as InodeId;
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
                || name.as_slice() == b"."
                || name.as_slice() == b".."
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

/// An image laid out: where each inode goes, ready to be written.
pub struct ImagePlan<'t> {
    tree: &'t Tree,
    walk: Walk,
    /// Per inode: the directory directly holds a whiteout.
    holds_whiteouts: Vec<bool>,
    version: u32,
    /// Node id of each inode, by position in the walk.
    nids: Vec<u64>,
    /// Directory-entry file type of each inode, by position in the walk.
    file_types: Vec<u8>,
    /// The inodes with data blocks, in order: (position in the walk, blocks).
    with_blocks: Vec<(u32, u64)>,
    shared: SharedXattrs,
    min_mtime: Mtime,
    has_acl: bool,
    inodes_end: u64,
    data_start: u64,
    data_blocks: u64,
}

impl<'t> ImagePlan<'t> {
    fn new(
        tree: &'t Tree,
        walk: Walk,
        holds_whiteouts: Vec<bool>,
        version: u32,
    ) -> Result<ImagePlan<'t>, ImageError> {
        let n = walk.order.len();
        let mut plan = ImagePlan {
            tree,
            walk,
            holds_whiteouts,
            version,
            nids: Vec::with_capacity(n),
            file_types: Vec::with_capacity(n),
            with_blocks: Vec::new(),
            shared: SharedXattrs::default(),
            min_mtime: Mtime::default(),
            has_acl: false,
            inodes_end: 0,
            data_start: 0,
            data_blocks: 0,
        };
        plan.scan_xattrs_and_mtimes();

        let mut pos = INODES_START;
        for i in 0..n {
            let id = plan.walk.order[i];
            let inode = plan.stored(id);
            let dirents = dirents_of(tree, &plan.walk, id);
            let p = plan.place(id, &inode, &dirents, pos);
            if p.xattr_size > XATTR_HEADER_SIZE + (u16::MAX as usize - 1) * 4 {
                return Err(ImageError::invalid(
                    &plan.walk.path(tree, id),
                    "xattrs too large for one inode",
                ));
            }
            plan.nids.push(p.nid);
            plan.file_types.push(file_type_code(inode.mode));
            if p.blocks > 0 {
                plan.with_blocks.push((i as u32, p.blocks));
            }
            plan.data_blocks += p.blocks;
            pos = p.end();
        }
        plan.inodes_end = pos.next_multiple_of(SLOT_SIZE);
        plan.data_start = (plan.inodes_end + plan.shared.size).next_multiple_of(BLOCK_SIZE);
        if plan.nids[0] > u16::MAX as u64 {
            return Err(ImageError::invalid(
                "/",
                "root inode placed beyond nid 65535",
            ));
        }
        Ok(plan)
    }

    /// The format version the image uses.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The image's size in bytes.
    pub fn size(&self) -> u64 {
        self.data_start + self.data_blocks * BLOCK_SIZE
    }

    /// How inode `id` (or a whiteout stub) is stored.
    fn stored(&self, id: InodeId) -> Stored<'t> {
        match self.tree.inodes.get(id) {
            Some(inode) => overlay::stored(
                inode,
                &Context {
                    version: self.version,
                    is_root: id == ROOT,
                    holds_whiteouts: self.holds_whiteouts[id],
                },
            ),
            None => overlay::stub(self.tree.root()),
        }
    }

    /// The earliest mtime, whether any ACL is stored, and which xattrs
    /// are used more than once (those are stored once and shared).
    fn scan_xattrs_and_mtimes(&mut self) {
        // Most xattrs are unique (metacopy digests, redirects): first find
        // the hashes seen more than once, then count only those exactly.
        let mut hashes = Vec::new();
        let mut min_mtime = None;
        for &id in &self.walk.order {
            let inode = self.stored(id);
            min_mtime = Some(min_mtime.map_or(inode.mtime, |m: Mtime| m.min(inode.mtime)));
            for (k, v) in &inode.xattrs {
                if k.as_ref() == b"system.posix_acl_access"
                    || k.as_ref() == b"system.posix_acl_default"
                {
                    self.has_acl = true;
                }
                // Truncated: a false match only costs an exact count.
                hashes.push(xattr_hash(k, v) as u32);
            }
        }
        self.min_mtime = min_mtime.unwrap_or_default();
        hashes.sort_unstable();
        let repeated: HashSet<u32, RandomState> = hashes
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        drop(hashes);
        if repeated.is_empty() {
            return;
        }

        type Counted = Vec<(Vec<u8>, Vec<u8>, u32)>;
        let mut counts: HashMap<u64, Counted, RandomState> = HashMap::default();
        for &id in &self.walk.order {
            for (k, v) in &self.stored(id).xattrs {
                let h = xattr_hash(k, v);
                if !repeated.contains(&(h as u32)) {
                    continue;
                }
                let bucket = counts.entry(h).or_default();
                match bucket
                    .iter_mut()
                    .find(|e| e.0 == k.as_ref() && e.1 == v.as_ref())
                {
                    Some(e) => e.2 += 1,
                    None => bucket.push((k.to_vec(), v.to_vec(), 1)),
                }
            }
        }
        // Shared xattrs are stored in descending order.
        let mut list: Vec<(Vec<u8>, Vec<u8>)> = counts
            .into_values()
            .flatten()
            .filter(|e| e.2 > 1)
            .map(|(k, v, _)| (k, v))
            .collect();
        list.sort_unstable_by(|a, b| {
            b.0.cmp(&a.0)
                .then(b.1.len().cmp(&a.1.len()))
                .then(b.1.cmp(&a.1))
        });
        let shared = &mut self.shared;
        for (i, (k, v)) in list.iter().enumerate() {
            shared.offsets.push(shared.size);
            shared.size += xattr_entry_size(k, v.len()) as u64;
            shared
                .by_hash
                .entry(xattr_hash(k, v))
                .or_default()
                .push(i as u32);
        }
        shared.list = list;
    }

    /// Where an inode goes when the one before it ended at `pos`, and
    /// how much it takes. The layout pass and the writing pass both ask,
    /// so the two cannot disagree.
    fn place(
        &self,
        id: InodeId,
        inode: &Stored,
        dirents: &[(&[u8], InodeId)],
        mut pos: u64,
    ) -> InodePlan {
        let mut p = InodePlan::default();
        let mut n_shared = 0;
        let mut unshared_size = 0;
        for (k, v) in &inode.xattrs {
            let offset = self
                .shared
                .offset(k, v)
                .filter(|_| n_shared < MAX_SHARED_XATTRS_PER_INODE);
            match offset {
                Some(_) => n_shared += 1,
                None => unshared_size += xattr_entry_size(k, v.len()),
            }
            p.xattrs.push(offset);
        }
        if !inode.xattrs.is_empty() {
            p.xattr_size = (XATTR_HEADER_SIZE + n_shared * 4 + unshared_size).next_multiple_of(4);
        }
        let is_dir = inode.mode & S_IFMT == S_IFDIR;
        p.nlink = if is_dir {
            let subdirs = self.tree.inodes[id]
                .entries
                .values()
                .filter(|e| self.tree.inodes[e.inode].is_dir())
                .count();
            2 + subdirs as u32
        } else {
            inode.nlink
        };

        (p.blocks, p.tail) = data_shape(inode, dirents);
        let size = if is_dir {
            p.blocks * BLOCK_SIZE + p.tail as u64
        } else {
            inode.size
        };
        p.compact = inode.mtime == self.min_mtime
            && p.nlink <= u16::MAX as u32
            && inode.uid <= u16::MAX as u32
            && inode.gid <= u16::MAX as u32
            && size <= u32::MAX as u64;
        p.inode_size = if p.compact {
            INODE_COMPACT_SIZE
        } else {
            INODE_EXTENDED_SIZE
        };

        let aligned = pos.next_multiple_of(SLOT_SIZE);
        p.pad = aligned - pos;
        pos = aligned;
        let extra = tail_padding(&mut p, inode, pos);
        p.pad += extra;
        pos += extra;
        p.nid = pos / SLOT_SIZE;
        p
    }

    /// Write the image, in one pass.
    pub fn write_to(&self, out: impl Write) -> io::Result<()> {
        let mut out = Out {
            w: io::BufWriter::with_capacity(1 << 20, out),
            pos: 0,
        };
        let header = ComposefsHeader {
            magic: COMPOSEFS_MAGIC.into(),
            version: COMPOSEFS_HEADER_VERSION.into(),
            flags: (if self.has_acl {
                COMPOSEFS_FLAG_HAS_ACL
            } else {
                0
            })
            .into(),
            composefs_version: self.version.into(),
            ..Default::default()
        };
        out.put(header.as_bytes())?;
        out.zeros(SUPERBLOCK_OFFSET - out.pos)?;
        let sb = Superblock {
            magic: EROFS_MAGIC.into(),
            feature_compat: (FEATURE_COMPAT_MTIME | FEATURE_COMPAT_XATTR_FILTER).into(),
            blkszbits: BLOCK_BITS,
            root_nid: (self.nids[0] as u16).into(),
            inos: (self.walk.order.len() as u64).into(),
            build_time: (self.min_mtime.sec as u64).into(),
            build_time_nsec: self.min_mtime.nsec.into(),
            blocks: ((self.data_start / BLOCK_SIZE + self.data_blocks) as u32).into(),
            meta_blkaddr: 0.into(),
            xattr_blkaddr: ((self.inodes_end / BLOCK_SIZE) as u32).into(),
            ..Default::default()
        };
        out.put(sb.as_bytes())?;
        debug_assert_eq!(out.pos, INODES_START);

        let mut next_block = self.data_start / BLOCK_SIZE;
        for (i, &id) in self.walk.order.iter().enumerate() {
            let inode = self.stored(id);
            let dirents = dirents_of(self.tree, &self.walk, id);
            let p = self.place(id, &inode, &dirents, out.pos);
            debug_assert_eq!(p.nid, self.nids[i]);
            self.write_inode(&mut out, i, &inode, &p, &dirents, &mut next_block)?;
        }
        out.pad_to(SLOT_SIZE)?;
        debug_assert_eq!(out.pos, self.inodes_end);
        for (k, v) in &self.shared.list {
            write_xattr(&mut out, k, v)?;
        }
        out.pad_to(BLOCK_SIZE)?;
        debug_assert_eq!(out.pos, self.data_start);

        for &(i, blocks) in &self.with_blocks {
            let id = self.walk.order[i as usize];
            let inode = self.stored(id);
            let dirents = dirents_of(self.tree, &self.walk, id);
            self.write_data_blocks(&mut out, &inode, blocks, &dirents)?;
        }
        debug_assert_eq!(out.pos, self.size());
        out.w.flush()
    }

    fn write_inode<W: Write>(
        &self,
        out: &mut Out<W>,
        i: usize,
        inode: &Stored,
        p: &InodePlan,
        dirents: &[(&[u8], InodeId)],
        next_block: &mut u64,
    ) -> io::Result<()> {
        out.zeros(p.pad)?;
        debug_assert_eq!(out.pos, p.nid * SLOT_SIZE);
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
        // Inode numbers are positions in the walk.
        let ino = i as u32;
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
            out.put(raw.as_bytes())?;
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
            out.put(raw.as_bytes())?;
        }

        if p.xattr_size > 0 {
            let start = out.pos;
            let shared_count = p.xattrs.iter().flatten().count();
            let header = XattrHeader {
                name_filter: name_filter(&inode.xattrs).into(),
                shared_count: shared_count as u8,
                ..Default::default()
            };
            out.put(header.as_bytes())?;
            let base = self.inodes_end % BLOCK_SIZE;
            for off in p.xattrs.iter().flatten() {
                out.put(&(((base + off) / 4) as u32).to_le_bytes())?;
            }
            for ((k, v), offset) in inode.xattrs.iter().zip(&p.xattrs) {
                if offset.is_none() {
                    write_xattr(out, k, v)?;
                }
            }
            debug_assert_eq!((out.pos - start) as usize, p.xattr_size);
        }

        if p.tail == 0 {
            return Ok(());
        }
        match ty {
            FileType::Directory => {
                let chunks = dirent_chunks(dirents);
                let last = chunks.last().expect("a directory has . and ..");
                self.write_dirent_chunk(out, &dirents[last.clone()])
            }
            FileType::Symlink => out.put(inode.payload.unwrap_or_default()),
            FileType::Regular => match inode.content {
                Some(c) => out.put(&c[c.len() - p.tail..]),
                None => {
                    for _ in 0..p.tail / 4 {
                        out.put(&NULL_CHUNK.to_le_bytes())?;
                    }
                    Ok(())
                }
            },
            _ => Ok(()),
        }
    }

    fn write_data_blocks<W: Write>(
        &self,
        out: &mut Out<W>,
        inode: &Stored,
        blocks: u64,
        dirents: &[(&[u8], InodeId)],
    ) -> io::Result<()> {
        match FileType::from_mode(inode.mode) {
            Some(FileType::Directory) => {
                for range in dirent_chunks(dirents).into_iter().take(blocks as usize) {
                    self.write_dirent_chunk(out, &dirents[range])?;
                    out.pad_to(BLOCK_SIZE)?;
                }
            }
            Some(FileType::Regular) => match inode.content {
                Some(c) => {
                    let end = (blocks * BLOCK_SIZE).min(c.len() as u64) as usize;
                    out.put(&c[..end])?;
                    out.pad_to(BLOCK_SIZE)?;
                }
                None => {
                    for _ in 0..MAX_CHUNKS {
                        out.put(&NULL_CHUNK.to_le_bytes())?;
                    }
                }
            },
            Some(FileType::Symlink) => {
                out.put(inode.payload.unwrap_or_default())?;
                out.pad_to(BLOCK_SIZE)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn write_dirent_chunk<W: Write>(
        &self,
        out: &mut Out<W>,
        dirents: &[(&[u8], InodeId)],
    ) -> io::Result<()> {
        let mut nameoff = dirents.len() * DIRENT_SIZE;
        for &(name, target) in dirents {
            let idx = self.walk.index[target] as usize;
            let d = Dirent {
                nid: self.nids[idx].into(),
                nameoff: (nameoff as u16).into(),
                file_type: self.file_types[idx],
                reserved: 0,
            };
            out.put(d.as_bytes())?;
            nameoff += name.len();
        }
        for &(name, _) in dirents {
            out.put(name)?;
        }
        Ok(())
    }
}

/// Where the inode table starts: right after the superblock.
const INODES_START: u64 = SUPERBLOCK_OFFSET + size_of::<Superblock>() as u64;

/// Where one inode goes and how it is stored.
#[derive(Clone, Default)]
struct InodePlan {
    compact: bool,
    inode_size: usize,
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

impl InodePlan {
    /// Where the next inode may begin.
    fn end(&self) -> u64 {
        self.nid * SLOT_SIZE + (self.inode_size + self.xattr_size + self.tail) as u64
    }
}

/// Xattrs used more than once, stored once in the order written.
#[derive(Default)]
struct SharedXattrs {
    list: Vec<(Vec<u8>, Vec<u8>)>,
    /// Offset of each in the shared area.
    offsets: Vec<u64>,
    /// Positions in `list` by [`xattr_hash`].
    by_hash: HashMap<u64, Vec<u32>, RandomState>,
    size: u64,
}

impl SharedXattrs {
    fn offset(&self, name: &[u8], value: &[u8]) -> Option<u64> {
        if self.list.is_empty() {
            return None;
        }
        self.by_hash
            .get(&xattr_hash(name, value))?
            .iter()
            .map(|&i| i as usize)
            .find(|&i| self.list[i].0 == name && self.list[i].1 == value)
            .map(|i| self.offsets[i])
    }
}

/// A hash of an xattr's name and value; equal hashes are compared in full.
fn xattr_hash(name: &[u8], value: &[u8]) -> u64 {
    FixedState::with_seed(0x5ea1_7ee5).hash_one((name, value))
}

/// The image as it is written, and how far it has got.
struct Out<W: Write> {
    w: io::BufWriter<W>,
    pos: u64,
}

impl<W: Write> Out<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> io::Result<()> {
        const ZEROS: [u8; 4096] = [0; 4096];
        while n > 0 {
            let k = n.min(ZEROS.len() as u64);
            self.put(&ZEROS[..k as usize])?;
            n -= k;
        }
        Ok(())
    }

    fn pad_to(&mut self, align: u64) -> io::Result<()> {
        self.zeros(self.pos.next_multiple_of(align) - self.pos)
    }
}

/// Blocks and tail bytes of an inode's data before placement.
fn data_shape(inode: &Stored, dirents: &[(&[u8], InodeId)]) -> (u64, usize) {
    match FileType::from_mode(inode.mode) {
        Some(FileType::Directory) => {
            let mut blocks = 0;
            let mut used = 0;
            for (name, _) in dirents {
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

/// Padding that keeps an inode's tail inside one block, adjusting the plan
/// when the tail cannot fit and must move to a block of its own.
fn tail_padding(p: &mut InodePlan, inode: &Stored, pos: u64) -> u64 {
    let non_tail = (p.inode_size + p.xattr_size) as u64;
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
    let dots: [(&[u8], InodeId); 2] = [(b".", id), (b"..", walk.parent[id] as InodeId)];
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

fn write_xattr<W: Write>(out: &mut Out<W>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let (index, suffix) = split_xattr_name(name);
    let entry = XattrEntry {
        name_len: suffix.len() as u8,
        name_index: index,
        value_size: (value.len() as u16).into(),
    };
    out.put(entry.as_bytes())?;
    out.put(suffix)?;
    out.put(value)?;
    out.pad_to(4)
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
