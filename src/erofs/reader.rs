//! Reading a composefs image back into a [`Tree`], undoing the overlayfs
//! rewrite. Every offset is bounds-checked: the input may be any bytes.
//!
//! Which of several entries naming one inode is its primary is recovered
//! from the inode numbers the writer assigned in breadth-first order, so
//! writing the tree again reproduces the image byte for byte.

use std::collections::HashMap;

use zerocopy::FromBytes;

use super::format::*;
use super::overlay::{
    ESCAPED_PREFIX, ESCAPED_WHITEOUT, ESCAPED_WHITEOUTS, METACOPY, OVERLAY_PREFIX, REDIRECT,
    USER_WHITEOUT, USER_WHITEOUTS,
};
use super::ReadError;
use crate::tree::{
    DirEntry, FileType, Inode, InodeId, Mtime, Name, Tree, MAX_INLINE_CONTENT, MAX_PATH_LEN, ROOT,
    S_IFCHR, S_IFMT,
};

/// Read a composefs image.
pub fn read_image(image: &[u8]) -> Result<Tree, ReadError> {
    Reader::new(image)?.read()
}

/// The format version recorded in a composefs image's header.
pub fn image_version(image: &[u8]) -> Result<u32, ReadError> {
    Ok(header(image)?.composefs_version.get())
}

fn header(image: &[u8]) -> Result<&ComposefsHeader, ReadError> {
    if image.len() < BLOCK_SIZE as usize {
        return Err(ReadError::TooSmall(image.len()));
    }
    let (h, _) = ComposefsHeader::ref_from_prefix(image).expect("length checked");
    if h.magic.get() != COMPOSEFS_MAGIC {
        return Err(ReadError::NotComposefs);
    }
    if h.version.get() != COMPOSEFS_HEADER_VERSION {
        return Err(ReadError::UnsupportedHeader(h.version.get()));
    }
    Ok(h)
}

/// An inode as stored, before the overlay rewrite is undone.
struct RawInode<'a> {
    mode: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: Mtime,
    u: u32,
    ino: u32,
    layout: u16,
    xattrs: &'a [u8],
    /// Bytes right after the xattrs, to the end of the image.
    after: &'a [u8],
}

struct Reader<'a> {
    image: &'a [u8],
    meta_start: u64,
    xattr_start: u64,
    build_time: Mtime,
    root_nid: u64,
}

impl<'a> Reader<'a> {
    fn new(image: &'a [u8]) -> Result<Reader<'a>, ReadError> {
        header(image)?;
        let sb_bytes = &image[SUPERBLOCK_OFFSET as usize..];
        let (sb, _) =
            Superblock::ref_from_prefix(sb_bytes).map_err(|_| ReadError::TooSmall(image.len()))?;
        if sb.magic.get() != EROFS_MAGIC {
            return Err(ReadError::NotErofs);
        }
        if sb.blkszbits != BLOCK_BITS {
            return Err(ReadError::corrupt(
                SUPERBLOCK_OFFSET,
                "block size is not 4096",
            ));
        }
        let meta_start = sb.meta_blkaddr.get() as u64 * BLOCK_SIZE;
        let xattr_start = sb.xattr_blkaddr.get() as u64 * BLOCK_SIZE;
        if meta_start >= image.len() as u64 || xattr_start >= image.len() as u64 {
            return Err(ReadError::corrupt(
                SUPERBLOCK_OFFSET,
                "metadata beyond the end",
            ));
        }
        Ok(Reader {
            image,
            meta_start,
            xattr_start,
            build_time: Mtime {
                sec: sb.build_time.get() as i64,
                nsec: sb.build_time_nsec.get(),
            },
            root_nid: sb.root_nid.get() as u64,
        })
    }

    fn bytes(&self, offset: u64, len: u64, what: &str) -> Result<&'a [u8], ReadError> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.image.len() as u64);
        match end {
            Some(end) => Ok(&self.image[offset as usize..end as usize]),
            None => Err(ReadError::corrupt(
                offset,
                &format!("{what} runs past the end"),
            )),
        }
    }

    fn inode(&self, nid: u64) -> Result<RawInode<'a>, ReadError> {
        let offset = nid
            .checked_mul(SLOT_SIZE)
            .and_then(|o| o.checked_add(self.meta_start))
            .ok_or_else(|| ReadError::corrupt(0, "nid out of range"))?;
        let head = self.bytes(offset, INODE_COMPACT_SIZE as u64, "inode")?;
        let format = u16::from_le_bytes([head[0], head[1]]);
        let layout = (format >> FORMAT_LAYOUT_SHIFT) & 7;
        let (mut raw, isize) = if format & FORMAT_EXTENDED == 0 {
            let (c, _) = InodeCompact::ref_from_prefix(head).expect("sized");
            (
                RawInode {
                    mode: c.mode.get() as u32,
                    nlink: c.nlink.get() as u32,
                    uid: c.uid.get() as u32,
                    gid: c.gid.get() as u32,
                    size: c.size.get() as u64,
                    mtime: self.build_time,
                    u: c.u.get(),
                    ino: c.ino.get(),
                    layout,
                    xattrs: &[],
                    after: &[],
                },
                INODE_COMPACT_SIZE,
            )
        } else {
            let bytes = self.bytes(offset, INODE_EXTENDED_SIZE as u64, "inode")?;
            let (e, _) = InodeExtended::ref_from_prefix(bytes).expect("sized");
            (
                RawInode {
                    mode: e.mode.get() as u32,
                    nlink: e.nlink.get(),
                    uid: e.uid.get(),
                    gid: e.gid.get(),
                    size: e.size.get(),
                    mtime: Mtime {
                        sec: e.mtime.get() as i64,
                        nsec: e.mtime_nsec.get(),
                    },
                    u: e.u.get(),
                    ino: e.ino.get(),
                    layout,
                    xattrs: &[],
                    after: &[],
                },
                INODE_EXTENDED_SIZE,
            )
        };
        let icount = u16::from_le_bytes([head[2], head[3]]) as u64;
        let xattr_size = if icount == 0 {
            0
        } else {
            XATTR_HEADER_SIZE as u64 + (icount - 1) * 4
        };
        let xattr_offset = offset + isize as u64;
        raw.xattrs = self.bytes(xattr_offset, xattr_size, "xattrs")?;
        raw.after = &self.image[(xattr_offset + xattr_size) as usize..];
        Ok(raw)
    }

    /// The bytes of an inode's data: `blocks` from its block address and
    /// then, when tail-packed, the tail after the inode.
    fn data(&self, raw: &RawInode<'a>, limit: u64) -> Result<Vec<u8>, ReadError> {
        if raw.size > limit {
            return Err(ReadError::corrupt(
                0,
                &format!("data of {} bytes is too large", raw.size),
            ));
        }
        let inline = raw.layout == LAYOUT_FLAT_INLINE;
        let tail = if inline { raw.size % BLOCK_SIZE } else { 0 };
        let outside = raw.size - tail;
        let mut data = Vec::with_capacity(raw.size as usize);
        if outside > 0 {
            let start = raw.u as u64 * BLOCK_SIZE;
            data.extend_from_slice(self.bytes(start, outside, "data block")?);
        }
        if tail > 0 {
            let t = raw
                .after
                .get(..tail as usize)
                .ok_or_else(|| ReadError::corrupt(0, "inline data runs past the end"))?;
            data.extend_from_slice(t);
        }
        Ok(data)
    }

    fn read(&self) -> Result<Tree, ReadError> {
        let root_raw = self.inode(self.root_nid)?;
        if root_raw.mode & S_IFMT != crate::tree::S_IFDIR {
            return Err(ReadError::corrupt(0, "root inode is not a directory"));
        }
        let mut tree = Tree::new(self.convert(&root_raw)?);
        // nid -> (inode id, primary decided)
        let mut seen: HashMap<u64, (InodeId, bool)> = HashMap::new();
        // nid -> first entry naming it, while no primary is decided
        let mut first_entry: HashMap<u64, (InodeId, Vec<u8>)> = HashMap::new();
        seen.insert(self.root_nid, (ROOT, true));
        let mut queue = vec![(self.root_nid, ROOT)];
        let mut next_ino = root_raw.ino.wrapping_add(1);
        let mut head = 0;
        while head < queue.len() {
            let (dir_nid, dir_id) = queue[head];
            head += 1;
            let dir_raw = self.inode(dir_nid)?;
            let listing = self.data(&dir_raw, self.image.len() as u64)?;
            for (name, nid) in parse_dirents(&listing)? {
                if name == b"." || name == b".." {
                    continue;
                }
                if let Some(&(id, decided)) = seen.get(&nid) {
                    if tree.inodes[id].is_dir() {
                        return Err(ReadError::corrupt(0, "a directory appears twice"));
                    }
                    let primary = !decided && self.inode(nid)?.ino == next_ino;
                    if primary {
                        next_ino = next_ino.wrapping_add(1);
                        seen.insert(nid, (id, true));
                        first_entry.remove(&nid);
                    }
                    tree.inodes[dir_id].entries.insert(
                        Name::from_slice(&name),
                        DirEntry {
                            inode: id,
                            hardlink: !primary,
                        },
                    );
                    continue;
                }
                let raw = self.inode(nid)?;
                let matches = raw.ino == next_ino;
                if matches {
                    next_ino = next_ino.wrapping_add(1);
                }
                if raw.mode & S_IFMT == S_IFCHR && raw.u == 0 {
                    // A whiteout stub of the overlay layer, not part of the tree.
                    continue;
                }
                let inode = self.convert(&raw)?;
                let is_dir = inode.is_dir();
                let id = tree.add_inode(inode);
                let primary = matches || is_dir;
                seen.insert(nid, (id, primary));
                if is_dir {
                    queue.push((nid, id));
                }
                if !primary {
                    first_entry.insert(nid, (dir_id, name.clone()));
                }
                tree.inodes[dir_id].entries.insert(
                    Name::from_slice(&name),
                    DirEntry {
                        inode: id,
                        hardlink: !primary,
                    },
                );
            }
        }
        // Images from other writers: the first entry seen becomes primary.
        for (dir, name) in first_entry.into_values() {
            if let Some(e) = tree.inodes[dir].entries.get_mut(name.as_slice()) {
                e.hardlink = false;
            }
        }
        Ok(tree)
    }

    /// An inode as the tree describes it: data read, overlay xattrs undone.
    fn convert(&self, raw: &RawInode<'a>) -> Result<Inode, ReadError> {
        let mut inode = Inode::new(raw.mode);
        inode.nlink = raw.nlink;
        inode.uid = raw.uid;
        inode.gid = raw.gid;
        if raw.mtime.nsec >= 1_000_000_000 {
            return Err(ReadError::corrupt(
                0,
                &format!("mtime of {} nanoseconds", raw.mtime.nsec),
            ));
        }
        inode.mtime = raw.mtime;
        inode.size = raw.size;
        let ty = FileType::from_mode(raw.mode).ok_or_else(|| {
            ReadError::corrupt(0, &format!("mode {:o} has no valid file type", raw.mode))
        })?;
        match ty {
            FileType::BlockDevice | FileType::CharDevice => inode.rdev = raw.u,
            FileType::Symlink => {
                let target = self.data(raw, MAX_PATH_LEN as u64)?;
                // No file system can hold an empty symlink; no dumpfile either.
                if target.is_empty() {
                    return Err(ReadError::corrupt(0, "symlink without a target"));
                }
                inode.payload = Some(target.into());
            }
            FileType::Regular if raw.size > 0 => match raw.layout {
                LAYOUT_FLAT_PLAIN | LAYOUT_FLAT_INLINE => {
                    let limit = (MAX_INLINE_CONTENT as u64).min(self.image.len() as u64);
                    inode.content = Some(self.data(raw, limit)?.into());
                }
                LAYOUT_CHUNK_BASED => {
                    if crate::erofs::format::chunking(raw.size).1 > crate::erofs::format::MAX_CHUNKS
                    {
                        return Err(ReadError::corrupt(
                            0,
                            &format!(
                                "file of {} bytes is too large for a composefs image",
                                raw.size
                            ),
                        ));
                    }
                }
                other => {
                    return Err(ReadError::corrupt(
                        0,
                        &format!("unsupported data layout {other}"),
                    ))
                }
            },
            _ => {}
        }
        for (name, value) in self.xattrs(raw)? {
            // What no file system (nor dumpfile) can hold.
            if name.is_empty() || name.contains(&0) || name.len() > 255 {
                return Err(ReadError::corrupt(
                    0,
                    &format!("invalid xattr name '{}'", name.escape_ascii()),
                ));
            }
            apply_xattr(&mut inode, name, value);
        }
        Ok(inode)
    }

    /// All xattrs of an inode: inline ones, then shared ones.
    fn xattrs(&self, raw: &RawInode<'a>) -> Result<Vec<RawXattr<'a>>, ReadError> {
        let mut out = Vec::new();
        if raw.xattrs.is_empty() {
            return Ok(out);
        }
        let (h, _) = XattrHeader::ref_from_prefix(raw.xattrs)
            .map_err(|_| ReadError::corrupt(0, "xattr header truncated"))?;
        let shared_count = h.shared_count as usize;
        let ids = raw
            .xattrs
            .get(XATTR_HEADER_SIZE..XATTR_HEADER_SIZE + shared_count * 4)
            .ok_or_else(|| ReadError::corrupt(0, "shared xattr ids truncated"))?;
        let mut rest = &raw.xattrs[XATTR_HEADER_SIZE + shared_count * 4..];
        while rest.len() > XATTR_ENTRY_SIZE {
            let (entry, consumed) = parse_xattr(rest)?;
            out.push(entry);
            rest = rest.get(consumed..).unwrap_or_default();
        }
        for id in ids.chunks_exact(4) {
            let id = u32::from_le_bytes(id.try_into().expect("4 bytes")) as u64;
            let start = self.xattr_start + id * 4;
            let area = self
                .image
                .get(start as usize..)
                .ok_or_else(|| ReadError::corrupt(start, "shared xattr beyond the end"))?;
            let (entry, _) = parse_xattr(area)
                .map_err(|_| ReadError::corrupt(start, "shared xattr runs past the end"))?;
            out.push(entry);
        }
        Ok(out)
    }
}

/// An xattr as stored: its full name and its value.
type RawXattr<'a> = (Vec<u8>, &'a [u8]);

/// One xattr entry and its padded size.
fn parse_xattr(bytes: &[u8]) -> Result<(RawXattr<'_>, usize), ReadError> {
    let (e, _) =
        XattrEntry::ref_from_prefix(bytes).map_err(|_| ReadError::corrupt(0, "xattr truncated"))?;
    let name_len = e.name_len as usize;
    let value_len = e.value_size.get() as usize;
    let prefix = XATTR_PREFIX_BY_INDEX
        .get(e.name_index as usize)
        .ok_or_else(|| ReadError::corrupt(0, &format!("unknown xattr prefix {}", e.name_index)))?;
    let body = bytes
        .get(XATTR_ENTRY_SIZE..XATTR_ENTRY_SIZE + name_len + value_len)
        .ok_or_else(|| ReadError::corrupt(0, "xattr runs past its area"))?;
    let name = [prefix, &body[..name_len]].concat();
    let size = (XATTR_ENTRY_SIZE + name_len + value_len).next_multiple_of(4);
    Ok(((name, &body[name_len..]), size))
}

/// Undo the overlay rewrite for one stored xattr.
fn apply_xattr(inode: &mut Inode, name: Vec<u8>, value: &[u8]) {
    let regular = inode.file_type() == Some(FileType::Regular);
    if name == REDIRECT {
        if regular {
            let path = value
                .strip_prefix(b"/")
                .filter(|_| value.len() > 1)
                .unwrap_or(value);
            inode.payload = Some(path.into());
        }
        return;
    }
    if name == METACOPY {
        if regular && value.len() == 36 {
            inode.digest = Some(value[4..].try_into().expect("32 bytes"));
        }
        return;
    }
    if name == ESCAPED_WHITEOUT && regular {
        inode.mode = S_IFCHR | (inode.mode & !S_IFMT);
        inode.rdev = 0;
        inode.size = 0;
        return;
    }
    if name == ESCAPED_WHITEOUTS || name == USER_WHITEOUT || name == USER_WHITEOUTS {
        return;
    }
    if let Some(rest) = name.strip_prefix(OVERLAY_PREFIX) {
        if name.starts_with(ESCAPED_PREFIX) {
            inode.xattrs.insert(
                [OVERLAY_PREFIX, &rest[b"overlay.".len()..]].concat(),
                value.to_vec(),
            );
        }
        return;
    }
    inode.xattrs.insert(name, value.to_vec());
}

/// The (name, nid) pairs of a directory's data, block by block.
fn parse_dirents(data: &[u8]) -> Result<Vec<(Vec<u8>, u64)>, ReadError> {
    let mut out = Vec::new();
    for block in data.chunks(BLOCK_SIZE as usize) {
        let (first, _) = Dirent::ref_from_prefix(block)
            .map_err(|_| ReadError::corrupt(0, "directory block truncated"))?;
        let table = first.nameoff.get() as usize;
        if table == 0 || table % DIRENT_SIZE != 0 || table > block.len() {
            return Err(ReadError::corrupt(0, "invalid directory block"));
        }
        let count = table / DIRENT_SIZE;
        for i in 0..count {
            let (d, _) = Dirent::ref_from_prefix(&block[i * DIRENT_SIZE..]).expect("within table");
            let start = d.nameoff.get() as usize;
            let end = if i + 1 < count {
                let (next, _) =
                    Dirent::ref_from_prefix(&block[(i + 1) * DIRENT_SIZE..]).expect("within table");
                next.nameoff.get() as usize
            } else {
                let tail = block.get(start..).unwrap_or_default();
                start + tail.iter().position(|&b| b == 0).unwrap_or(tail.len())
            };
            if start < table || end <= start || end > block.len() {
                return Err(ReadError::corrupt(0, "invalid directory entry name"));
            }
            let name = &block[start..end];
            // What no file system (nor dumpfile) can hold.
            if name.len() > crate::tree::MAX_NAME_LEN || name.contains(&b'/') || name.contains(&0) {
                return Err(ReadError::corrupt(
                    0,
                    &format!("invalid directory entry name '{}'", name.escape_ascii()),
                ));
            }
            out.push((name.to_vec(), d.nid.get()));
        }
    }
    Ok(out)
}
