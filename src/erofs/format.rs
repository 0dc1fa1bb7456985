//! The on-disk format of a composefs image: the composefs header, then an
//! EROFS filesystem (superblock, inodes, shared xattrs, data blocks).
//! Every structure is little-endian and unaligned, declared once here for
//! both the writer and the reader.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Filesystem block size; composefs images always use 4096.
pub const BLOCK_SIZE: u64 = 4096;
pub const BLOCK_BITS: u8 = 12;
/// Inodes start on 32-byte slots; a nid counts slots.
pub const SLOT_SIZE: u64 = 32;
/// Offset of the EROFS superblock; the composefs header sits before it.
pub const SUPERBLOCK_OFFSET: u64 = 1024;

pub const COMPOSEFS_MAGIC: u32 = 0xd078_629a;
/// Version of the composefs header layout (not the image format version).
pub const COMPOSEFS_HEADER_VERSION: u32 = 1;
/// Header flag: some inode carries a POSIX ACL.
pub const COMPOSEFS_FLAG_HAS_ACL: u32 = 1;
/// Highest image format version this writer produces.
pub const MAX_FORMAT_VERSION: u32 = 1;

pub const EROFS_MAGIC: u32 = 0xe0f5_e1e2;
pub const FEATURE_COMPAT_MTIME: u32 = 0x2;
pub const FEATURE_COMPAT_XATTR_FILTER: u32 = 0x4;

/// Data layouts, stored in bits 1..3 of an inode's format field.
pub const LAYOUT_FLAT_PLAIN: u16 = 0;
pub const LAYOUT_FLAT_INLINE: u16 = 2;
pub const LAYOUT_CHUNK_BASED: u16 = 4;
/// Bit 0 of the format field: 0 for a compact inode, 1 for an extended one.
pub const FORMAT_EXTENDED: u16 = 1;
pub const FORMAT_LAYOUT_SHIFT: u16 = 1;

/// Low bits of a chunk-based inode's chunk format: log2(chunk size) - 12.
pub const CHUNK_BLKBITS_MASK: u32 = 0x1f;
/// At most this many chunk indexes (one block) per external file.
pub const MAX_CHUNKS: u64 = 1024;
/// A chunk index meaning "no data here": reads come from the lower layer.
pub const NULL_CHUNK: u32 = u32::MAX;

/// Name prefixes stored as an index instead of text.
pub const XATTR_PREFIXES: [(u8, &[u8]); 5] = [
    (1, b"user."),
    (2, b"system.posix_acl_access"),
    (3, b"system.posix_acl_default"),
    (4, b"trusted."),
    (6, b"security."),
];
/// Prefix text for each index, for reading (index 5 is "lustre.").
pub const XATTR_PREFIX_BY_INDEX: [&[u8]; 7] = [
    b"",
    b"user.",
    b"system.posix_acl_access",
    b"system.posix_acl_default",
    b"trusted.",
    b"lustre.",
    b"security.",
];
/// An inode may reference at most this many shared xattrs.
pub const MAX_SHARED_XATTRS_PER_INODE: usize = 0x80;
pub const XATTR_FILTER_SEED: u32 = 0x25BB_E08F;

/// Directory entry file types.
pub const FT_REG_FILE: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHRDEV: u8 = 3;
pub const FT_BLKDEV: u8 = 4;
pub const FT_FIFO: u8 = 5;
pub const FT_SOCK: u8 = 6;
pub const FT_SYMLINK: u8 = 7;

/// The 32-byte composefs header at offset 0.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Default)]
#[repr(C)]
pub struct ComposefsHeader {
    /// COMPOSEFS_MAGIC.
    pub magic: U32,
    /// COMPOSEFS_HEADER_VERSION.
    pub version: U32,
    /// COMPOSEFS_FLAG_* bits.
    pub flags: U32,
    /// Image format version the writer chose.
    pub composefs_version: U32,
    pub unused: [U32; 4],
}

/// The 128-byte EROFS superblock at SUPERBLOCK_OFFSET.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Default)]
#[repr(C)]
pub struct Superblock {
    /// EROFS_MAGIC.
    pub magic: U32,
    /// crc32c of the superblock; unused by composefs (no SB_CHKSUM feature).
    pub checksum: U32,
    pub feature_compat: U32,
    /// log2 of the block size.
    pub blkszbits: u8,
    /// Extra 16-byte superblock slots.
    pub sb_extslots: u8,
    /// nid of the root directory.
    pub root_nid: U16,
    /// Number of inodes.
    pub inos: U64,
    /// The mtime that compact inodes (which store none) take.
    pub build_time: U64,
    pub build_time_nsec: U32,
    /// Total blocks.
    pub blocks: U32,
    /// Block where nid 0 lives.
    pub meta_blkaddr: U32,
    /// Block the shared xattr ids count from.
    pub xattr_blkaddr: U32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub feature_incompat: U32,
    pub available_compr_algs: U16,
    pub extra_devices: U16,
    pub devt_slotoff: U16,
    pub dirblkbits: u8,
    pub xattr_prefix_count: u8,
    pub xattr_prefix_start: U32,
    pub packed_nid: U64,
    pub xattr_filter_reserved: u8,
    pub reserved2: [u8; 23],
}

/// A 32-byte inode: 16-bit ids and no mtime of its own.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Default)]
#[repr(C)]
pub struct InodeCompact {
    /// Extended bit and data layout.
    pub format: U16,
    /// Size of the inline xattr area in 4-byte units past the header.
    pub xattr_icount: U16,
    pub mode: U16,
    pub nlink: U16,
    pub size: U32,
    pub reserved: U32,
    /// Block address, rdev or chunk format, by file type.
    pub u: U32,
    /// Inode number for 32-bit stat.
    pub ino: U32,
    pub uid: U16,
    pub gid: U16,
    pub reserved2: U32,
}

/// A 64-byte inode with 32-bit ids and its own mtime.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Default)]
#[repr(C)]
pub struct InodeExtended {
    pub format: U16,
    pub xattr_icount: U16,
    pub mode: U16,
    pub reserved: U16,
    pub size: U64,
    pub u: U32,
    pub ino: U32,
    pub uid: U32,
    pub gid: U32,
    pub mtime: U64,
    pub mtime_nsec: U32,
    pub nlink: U32,
    pub reserved2: [u8; 16],
}

/// Start of an inode's xattr area.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Default)]
#[repr(C)]
pub struct XattrHeader {
    /// Bloom filter over names: a set bit means "no xattr hashes here".
    pub name_filter: U32,
    /// Number of shared xattr ids that follow the header.
    pub shared_count: u8,
    pub reserved: [u8; 7],
}

/// One xattr: this header, the name suffix, the value, padding to 4.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Default)]
#[repr(C)]
pub struct XattrEntry {
    pub name_len: u8,
    /// Prefix index (XATTR_PREFIXES) the name suffix follows.
    pub name_index: u8,
    pub value_size: U16,
}

/// A directory entry; names follow all entries of the block.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Default)]
#[repr(C)]
pub struct Dirent {
    pub nid: U64,
    /// Offset of the name within the block.
    pub nameoff: U16,
    pub file_type: u8,
    pub reserved: u8,
}

pub const INODE_COMPACT_SIZE: usize = size_of::<InodeCompact>();
pub const INODE_EXTENDED_SIZE: usize = size_of::<InodeExtended>();
pub const XATTR_HEADER_SIZE: usize = size_of::<XattrHeader>();
pub const XATTR_ENTRY_SIZE: usize = size_of::<XattrEntry>();
pub const DIRENT_SIZE: usize = size_of::<Dirent>();

const _: () = assert!(size_of::<ComposefsHeader>() == 32);
const _: () = assert!(size_of::<Superblock>() == 128);
const _: () = assert!(INODE_COMPACT_SIZE == 32);
const _: () = assert!(INODE_EXTENDED_SIZE == 64);
const _: () = assert!(XATTR_HEADER_SIZE == 12);
const _: () = assert!(DIRENT_SIZE == 12);

/// The prefix index and remaining suffix of an xattr name.
pub fn split_xattr_name(name: &[u8]) -> (u8, &[u8]) {
    for (index, prefix) in XATTR_PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            return (index, rest);
        }
    }
    (0, name)
}

/// On-disk size of one xattr entry, padded to 4 bytes.
pub fn xattr_entry_size(name: &[u8], value_len: usize) -> usize {
    let (_, suffix) = split_xattr_name(name);
    (XATTR_ENTRY_SIZE + suffix.len() + value_len).next_multiple_of(4)
}

/// The chunk size (log2) and count for an external file of `size` bytes:
/// as few chunks as possible, each at least a block.
pub fn chunking(size: u64) -> (u32, u64) {
    debug_assert!(size > 0);
    let mut bits = if size <= 1 {
        0
    } else {
        64 - (size - 1).leading_zeros()
    };
    bits = bits.max(BLOCK_BITS as u32);
    bits = bits.min(CHUNK_BLKBITS_MASK + BLOCK_BITS as u32);
    (bits, size.div_ceil(1u64 << bits))
}
