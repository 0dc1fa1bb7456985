//! fs-verity digests: computed in user space, and enabled or measured by the
//! kernel where the filesystem supports it.

mod blocks;
mod ioctl;

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use blocks::BLOCK;
pub use ioctl::{enable, measure, EnableOutcome};

/// A SHA-256 fs-verity digest (4096-byte blocks, no salt).
pub type Digest = [u8; 32];

/// A digest in lower-case hex, held on the stack: objects are named by
/// it several times per file of a commit.
pub struct Hex([u8; 64]);

impl Hex {
    pub fn new(digest: &Digest) -> Hex {
        let mut hex = [0; 64];
        hex::encode_to_slice(digest, &mut hex).expect("64 digits for 32 bytes");
        Hex(hex)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

/// The fs-verity digest of `data`.
pub fn digest_bytes(data: &[u8]) -> Digest {
    // Most files of a system are one block or less: the digest of their
    // block is the root, with no tree to keep nor memory to take.
    if data.len() <= BLOCK {
        let mut root = [0u8; 32];
        if !data.is_empty() {
            let mut block = [0u8; BLOCK];
            block[..data.len()].copy_from_slice(data);
            root = blocks::hash_one(&block);
        }
        return descriptor_digest(&root, data.len() as u64);
    }
    let mut hasher = Hasher::default();
    hasher.update(data);
    hasher.finalize().0
}

/// Size of the read buffer [`digest_reader`] uses per thread.
const READ_BUFFER: usize = 256 * 1024;

thread_local! {
    // Reused across calls: zeroing a fresh buffer per small file costs
    // more than hashing it.
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The fs-verity digest of everything `reader` yields and its length, read
/// in large chunks so a file of any size is hashed in bounded memory.
pub fn digest_reader(reader: impl Read) -> io::Result<(Digest, u64)> {
    BUFFER.with_borrow_mut(|buf| {
        if buf.len() < READ_BUFFER {
            buf.resize(READ_BUFFER, 0);
        }
        digest_with_buffer(reader, buf)
    })
}

fn digest_with_buffer(mut reader: impl Read, buf: &mut [u8]) -> io::Result<(Digest, u64)> {
    let mut hasher = Hasher::default();
    loop {
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize())
}

/// An fs-verity digest (SHA-256, 4096-byte blocks, no salt) computed
/// incrementally: the Merkle tree's data blocks are hashed two at a time
/// (see [`blocks`]), and of the tree only the blocks being filled are
/// kept, one per level.
#[derive(Default)]
pub struct Hasher {
    /// The start of a data block whose end is still to come.
    partial: Vec<u8>,
    /// Per level of the tree (0: digests of data blocks), the digests of
    /// the block being filled.
    levels: Vec<Vec<u8>>,
    /// Per level, how many digests it has had in all.
    counts: Vec<u64>,
    len: u64,
}

impl Hasher {
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.partial.is_empty() {
            let take = (BLOCK - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < BLOCK {
                return;
            }
            let digest = blocks::hash_one(as_block(&self.partial));
            self.partial.clear();
            self.add(0, digest);
        }
        let mut pairs = data.chunks_exact(2 * BLOCK);
        for pair in &mut pairs {
            let (a, b) = pair.split_at(BLOCK);
            let [da, db] = blocks::hash_two(as_block(a), as_block(b));
            self.add(0, da);
            self.add(0, db);
        }
        let mut rest = pairs.remainder();
        if rest.len() >= BLOCK {
            let digest = blocks::hash_one(as_block(&rest[..BLOCK]));
            self.add(0, digest);
            rest = &rest[BLOCK..];
        }
        self.partial.extend_from_slice(rest);
    }

    /// Add a digest to `level`, first hashing its block into the level
    /// above if it is full.
    fn add(&mut self, level: usize, digest: Digest) {
        if self.levels.len() == level {
            self.levels.push(Vec::with_capacity(BLOCK));
            self.counts.push(0);
        }
        if self.levels[level].len() == BLOCK {
            let full = blocks::hash_one(as_block(&self.levels[level]));
            self.levels[level].clear();
            self.add(level + 1, full);
        }
        self.levels[level].extend_from_slice(&digest);
        self.counts[level] += 1;
    }

    /// The digest and the number of bytes hashed.
    pub fn finalize(mut self) -> (Digest, u64) {
        if !self.partial.is_empty() {
            let mut last = std::mem::take(&mut self.partial);
            last.resize(BLOCK, 0);
            self.add(0, blocks::hash_one(as_block(&last)));
        }
        // The root is the digest of the one block of the top level: the
        // first level that has only one digest. An empty file has none.
        let mut root = [0u8; 32];
        let mut level = 0;
        while level < self.levels.len() {
            if self.counts[level] == 1 {
                root.copy_from_slice(&self.levels[level]);
                break;
            }
            let mut last = std::mem::take(&mut self.levels[level]);
            last.resize(BLOCK, 0);
            self.add(level + 1, blocks::hash_one(as_block(&last)));
            level += 1;
        }
        (descriptor_digest(&root, self.len), self.len)
    }
}

/// The file digest: that of its `struct fsverity_descriptor` (version 1,
/// SHA-256, 2^12-byte blocks, no salt, the data size, the root hash;
/// zeros after).
fn descriptor_digest(root: &Digest, len: u64) -> Digest {
    let mut descriptor = [0u8; 256];
    descriptor[..4].copy_from_slice(&[1, 1, 12, 0]);
    descriptor[8..16].copy_from_slice(&len.to_le_bytes());
    descriptor[16..48].copy_from_slice(root);
    Sha256::digest(descriptor).into()
}

/// A slice of exactly [`BLOCK`] bytes as a block.
fn as_block(bytes: &[u8]) -> &[u8; BLOCK] {
    bytes.try_into().expect("a whole block")
}

/// A writer that hashes what it passes on to `inner`.
pub struct HashingWriter<W> {
    pub inner: W,
    pub hasher: Hasher,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Hasher::default(),
        }
    }
}

impl<W: io::Write> io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Parse 64 hex digits into a digest.
pub fn parse_hex(text: &[u8]) -> Option<Digest> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            hex::encode(digest_bytes(b"hello world\n")),
            "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92"
        );
        assert_eq!(
            hex::encode(digest_bytes(b"foo bar baz\n")),
            "91e7d88cb7bc9cf6d8db3b0ecf89af4abf204bef5b3ade5113d5b62ef374e70b"
        );
    }

    #[test]
    fn reader_matches_bytes_across_chunk_boundaries() {
        let data: Vec<u8> = (0..(600 * 1024 + 17))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let (d, n) = digest_reader(&data[..]).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(d, digest_bytes(&data));
    }

    /// Against the fs-verity crate's reference implementation: every
    /// size where the tree changes shape, in pieces of many sizes.
    #[test]
    fn digests_match_the_reference_at_every_tree_shape() {
        use fs_verity::FsVeritySha256;
        let data: Vec<u8> = (0..(129 * 128 * BLOCK + 3 * BLOCK))
            .map(|i| (i * 31 % 253) as u8)
            .collect();
        let sizes = [
            0,
            1,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            2 * BLOCK,
            3 * BLOCK + 5,
            128 * BLOCK,
            128 * BLOCK + 1,
            129 * BLOCK,
            128 * 128 * BLOCK,
            128 * 128 * BLOCK + 1,
            data.len(),
        ];
        for size in sizes {
            let mut reference = FsVeritySha256::new();
            sha2::Digest::update(&mut reference, &data[..size]);
            let expected: Digest = reference.finalize().into();
            assert_eq!(digest_bytes(&data[..size]), expected, "size {size}");
            // The largest sizes take long unoptimised: one odd piece size.
            let pieces: &[usize] = if size > 1 << 20 {
                &[2 * BLOCK + 1]
            } else {
                &[1000, BLOCK, 2 * BLOCK + 1, 256 * 1024]
            };
            for &piece in pieces {
                let mut hasher = Hasher::default();
                for chunk in data[..size].chunks(piece) {
                    hasher.update(chunk);
                }
                assert_eq!(
                    hasher.finalize(),
                    (expected, size as u64),
                    "size {size} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn parse_hex_rejects_bad_input() {
        assert!(parse_hex(b"00").is_none());
        assert!(parse_hex(&[b'g'; 64]).is_none());
        assert_eq!(parse_hex(&[b'a'; 64]), Some([0xaa; 32]));
    }
}
